export * from "./ids.js";
export * from "./channel.js";
export * from "./errors.js";
export * from "./messages.js";
export * from "./cursor.js";
export * from "./sse.js";
export * from "./transports.js";
export * from "./presence.js";
