// SPDX-License-Identifier: MIT
// presenced-node: the Node.js SDK of presenced (protocol v1).
export { mintToken } from './src/token.js';
export { PresenceError, WebhookError } from './src/errors.js';
export { verifyWebhook, webhookMiddleware, fastifyWebhook, WebhookGuard } from './src/webhook.js';
export { PresenceAPI } from './src/api.js';
export { EventStream, parseSSE } from './src/events.js';
export { BackendConnection } from './src/backend.js';
export { trackWebSocketServer, trackSocketIO } from './src/adapters.js';

/** The protocol version this SDK speaks; the package's major version. */
export const PROTOCOL_VERSION = 1;
