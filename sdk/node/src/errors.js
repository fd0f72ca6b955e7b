// SPDX-License-Identifier: MIT
// The daemon's errors as one typed class: every HTTP error of presenced is a
// status plus {"error":{"code","message"}} (docs/api.md#errors); `code` is the
// stable part to match on.

const NOT_RETRYABLE_WITHOUT_STATUS = ['origin_taken_over', 'bad_json', 'unknown_type', 'bad_field', 'too_many_ops'];

export class PresenceError extends Error {
  /**
   * @param {number} status  HTTP status (0 when no answer came: network error)
   * @param {string} code    the daemon's error code, or 'network' / 'bad_response'
   * @param {string} message
   */
  constructor(status, code, message, cause) {
    super(`${code}: ${message}`, cause ? { cause } : undefined);
    this.name = 'PresenceError';
    this.status = status;
    this.code = code;
  }
  /**
   * Worth retrying: no answer (but origin_taken_over: another process holds
   * the origin; or a backend frame refused for its content, which sent again
   * is refused again), a 5xx, 408 or 429.
   */
  get retryable() {
    return (this.status === 0 && !NOT_RETRYABLE_WITHOUT_STATUS.includes(this.code)) || this.status >= 500 || this.status === 408 || this.status === 429;
  }
}

/** A webhook delivery refused by verification; `status` is what to answer. */
export class WebhookError extends Error {
  constructor(code, message, status = 401) {
    super(`${code}: ${message}`);
    this.name = 'WebhookError';
    this.code = code;
    this.status = status;
  }
}
