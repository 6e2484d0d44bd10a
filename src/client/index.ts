/** `ladder-hub/client`: browser and Node. Imports nothing from Node or the server. */
export { createClient, LadderClient, type ChannelMap, type ClientEvents, type DataOf, type SubscribeOptions } from "./client.js";
export type { PublishResult } from "./outbox.js";
export { Subscription, type SubscriptionEvents } from "./subscription.js";
export { backoffCeiling, backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from "./backoff.js";
export { LADDER, type ClientOptions, type ClientState, type PublishQueueOptions, type TransportName, type WebSocketConstructor, type WebSocketLike } from "./options.js";
export { LadderError, type ErrorCode, type Gap, type GapReason, type Message, type MessageId } from "../protocol/index.js";
