/**
 * The hooks a hub was configured with, built once: the connect hook, the subscribe/publish hooks, the
 * webhooks and the backfill hook. Calls to the app share one caller (one concurrency bound); webhooks have
 * their own, so retries to a failing app never hold the slots a connecting client waits for.
 */
import type { Logger } from "pino";
import { HookCaller, type HookObserver } from "./caller.js";
import { ChannelHooks } from "./channel.js";
import { ConnectHook } from "./connect.js";
import { BackfillHook } from "./backfill.js";
import { checkHooksOptions, type HooksOptions } from "./options.js";
import { Webhooks } from "./webhooks.js";

export class Hooks {
  readonly connect: ConnectHook | null;
  readonly channels: ChannelHooks;
  /** Null without `hooks.webhooks`; presence calls `webhooks?.emit("member_added", channel, member)`. */
  readonly webhooks: Webhooks | null;
  readonly backfill: BackfillHook | null;
  /** True with a connect, subscribe or publish hook: those decide access, so access control is on. */
  readonly decideAccess: boolean;

  constructor(options: HooksOptions, logger: Logger, observer: HookObserver | null) {
    checkHooksOptions(options);
    const headers = { ...options.headers };
    const caller = new HookCaller(options, logger, observer, headers);
    this.connect = options.connect ? new ConnectHook(options.connect, caller) : null;
    this.channels = new ChannelHooks(options, caller);
    this.webhooks = options.webhooks ? new Webhooks(options.webhooks, new HookCaller(options, logger, observer, headers), logger, observer) : null;
    this.backfill = options.backfill ? new BackfillHook(options.backfill, caller) : null;
    this.decideAccess = options.connect !== undefined || options.subscribe !== undefined || options.publish !== undefined;
  }

  close(): void {
    this.webhooks?.close();
  }
}
