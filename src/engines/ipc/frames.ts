/** The IPC engine's frames: requests from a worker, answers and live messages from the log's owner. */
import { ERROR_STATUS, LadderError, type ErrorCode, type Message, type MessageId } from "../../protocol/index.js";
import type { ReadResult } from "../engine.js";

/** Tag of every engine frame, so other traffic on a shared channel (node:cluster, prom-client) is ignored. */
export const TAG = "ladder.engine";

export type Request =
  | { readonly op: "publish"; readonly channel: string; readonly data: unknown; readonly key?: string }
  | { readonly op: "read"; readonly channel: string; readonly since: MessageId | null; readonly limit: number }
  | { readonly op: "subscribe"; readonly channel: string };

export type RequestFrame = { readonly tag: typeof TAG; readonly kind: "request"; readonly ref: number } & Request;
export interface UnsubscribeFrame {
  readonly tag: typeof TAG;
  readonly kind: "unsubscribe";
  readonly channel: string;
}
export interface AnswerFrame {
  readonly tag: typeof TAG;
  readonly kind: "answer";
  readonly ref: number;
  readonly value?: Message | ReadResult | null;
  readonly error?: { readonly code: string; readonly message: string };
}
export interface LiveFrame {
  readonly tag: typeof TAG;
  readonly kind: "live";
  readonly message: Message;
  /** The channel's message before this one (see live-feeds.ts), so a worker can tell it missed one. */
  readonly prev: MessageId;
}

export type ToHost = RequestFrame | UnsubscribeFrame;
export type ToWorker = AnswerFrame | LiveFrame;

export function isEngineFrame(frame: unknown): frame is { readonly tag: typeof TAG; readonly kind: string } {
  return typeof frame === "object" && frame !== null && (frame as { tag?: unknown }).tag === TAG;
}

/** An error as it crosses the link: a LadderError keeps its code (a 413, a 503), anything else is internal. */
export function errorToFrame(error: unknown): { code: string; message: string } {
  if (error instanceof LadderError) return { code: error.code, message: error.message };
  return { code: "internal", message: error instanceof Error ? error.message : String(error) };
}

export function errorFromFrame(error: { code: string; message: string }): Error {
  if (Object.hasOwn(ERROR_STATUS, error.code)) return new LadderError(error.code as ErrorCode, error.message);
  return new Error(error.message);
}
