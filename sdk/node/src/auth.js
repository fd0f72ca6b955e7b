// SPDX-License-Identifier: MIT
// The API key as a header value, checked once where a client is made. A key
// read from a file ends with a newline: fetch drops surrounding whitespace
// but node:http (under the backend connection's WebSocket) throws on it, from
// inside the reconnect loop. Any other control character, or one past
// Latin-1, cannot be sent at all; it is refused here, never shown, since the
// message would otherwise carry the secret into logs.

/** The key to send (surrounding spaces, tabs and line ends dropped); undefined stays undefined. */
export function apiKeyOf(apiKey, who) {
  if (apiKey === undefined || apiKey === null || apiKey === '') return undefined;
  if (typeof apiKey !== 'string') throw new TypeError(`${who}: apiKey must be a string, not ${typeof apiKey}`);
  const key = apiKey.replace(/^[ \t\r\n]+|[ \t\r\n]+$/g, '');
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]|[^\u0000-\u00ff]/.test(key)) {
    throw new TypeError(`${who}: apiKey holds a character that cannot be sent in a header (the key is not shown)`);
  }
  return key;
}

/**
 * Keeps the key as `obj.apiKey`, but not enumerable: console.log of a client,
 * JSON.stringify of it, or an error reporter capturing it would otherwise
 * print the secret.
 */
export function holdApiKey(obj, apiKey, who) {
  Object.defineProperty(obj, 'apiKey', { value: apiKeyOf(apiKey, who), enumerable: false, writable: true, configurable: true });
}
