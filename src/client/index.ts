/** `ladder-hub/client`: browser and Node. Imports nothing from Node or the server. */
export { createClient, LadderClient, type ClientEvents, type SubscribeOptions } from "./client.js";
export { Subscription, type SubscriptionEvents } from "./subscription.js";
export { backoffCeiling, backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
export { LADDER, type ClientOptions, type ClientState, type TransportName, type WebSocketConstructor, type WebSocketLike } from "./options.js";
export { LadderError, type ErrorCode, type Gap, type GapReason, type Message, type MessageId } from "../protocol/index.js";
