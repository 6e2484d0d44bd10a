/**
 * Publishing over HTTP: `POST` to the messages path with one message `{"channel"?, "data", "key"?}` or a
 * batch `{"channel"?, "messages": [...]}`. The caller is authenticated before the body is read; each
 * message is then checked against the caller's rights and publish rate (and, under a `hook` rule, the
 * app's hook) before the hub publishes it.
 */
import type { Target } from "../edge/target.js";
import { checkPublishKey, DEFAULT_CHANNEL, LadderError } from "../../protocol/index.js";
import type { Published } from "../../engines/engine.js";
import type { Access } from "../auth/access.js";
import { ANONYMOUS, type Principal } from "../auth/rules.js";
import { closeAfterResponse, readBody, sendJson, sendJsonText, type ExchangeRequest, type ExchangeResponse } from "../edge/http.js";
import { checkChannel } from "../edge/params.js";
import type { RequestFacts } from "../hooks/connect.js";
import type { ResolvedOptions } from "../options.js";
import { batchItem, batchItems, isBatchError, publishEach } from "./batch.js";

/** What HTTP publishing needs of the hub. */
export interface PublishHost {
  readonly options: ResolvedOptions;
  readonly access: Access;
  draining(): boolean;
  /**
   * The hub's publish after the caller's checks: channel, size and engine; refusals throw at once. The
   * message itself when the engine appends within the call (the memory engine), else a promise of it.
   */
  publish(channel: string, data: unknown, key?: string): Published | Promise<Published>;
  url(req: ExchangeRequest): Target;
  clientIp(req: ExchangeRequest): string;
  facts(req: ExchangeRequest, transport: string, channels: readonly string[]): RequestFacts;
  fail(res: ExchangeResponse, error: unknown): void;
  refuse(res: ExchangeResponse, error: LadderError): void;
}

export class HttpPublish {
  readonly #host: PublishHost;

  constructor(host: PublishHost) {
    this.#host = host;
  }

  /** A `POST` to the messages path. Returns a promise only when authentication has to wait. */
  handle(req: ExchangeRequest, res: ExchangeResponse): Promise<void> | void {
    const host = this.#host;
    if (host.draining()) {
      closeAfterResponse(req, res);
      host.refuse(res, new LadderError("draining", "server is shutting down"));
      return;
    }
    const access = host.access;
    // Authenticated before the body is read: a caller without a valid token costs no buffering.
    const principal = access.enabled ? access.principalFor(req, host.url(req), host.facts(req, "http", [])) : ANONYMOUS;
    if (principal instanceof Promise) {
      return principal.then(
        (who) => this.#readPublish(req, res, who),
        (error: unknown) => {
          closeAfterResponse(req, res);
          throw error;
        },
      );
    }
    this.#readPublish(req, res, principal);
  }

  #readPublish(req: ExchangeRequest, res: ExchangeResponse, principal: Principal): void {
    const { maxMessageBytes, maxBatchBytes } = this.#host.options;
    readBody(req, Math.max(maxMessageBytes, maxBatchBytes), (error, body) => {
      if (error) {
        closeAfterResponse(req, res);
        return this.#host.fail(res, error);
      }
      try {
        this.#publishBody(req, res, principal, body);
      } catch (refusal) {
        this.#host.fail(res, refusal);
      }
    });
  }

  #publishBody(req: ExchangeRequest, res: ExchangeResponse, principal: Principal, body: Buffer): void {
    // The body may be as large as a batch; anything else over maxMessageBytes is refused as too large.
    const max = this.#host.options.maxMessageBytes;
    const tooLarge = (): LadderError => new LadderError("payload_too_large", `body is larger than ${max} bytes`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(body.toString("utf8"));
    } catch {
      throw body.length > max ? tooLarge() : new LadderError("bad_json", "body is not valid JSON");
    }
    const fields = (typeof parsed === "object" && parsed !== null && !Array.isArray(parsed) ? parsed : {}) as Record<string, unknown>;
    if (!("data" in fields) && "messages" in fields) return this.#publishBatch(req, res, principal, fields, body.length);
    if (body.length > max) throw tooLarge();
    if (fields !== parsed) throw new LadderError("bad_request", 'body must be an object {"channel"?, "data"} or {"messages": [...]}');
    if (!("data" in fields)) throw new LadderError("bad_request", 'body needs a "data" field');
    const key = checkPublishKey(fields.key, "bad_request");
    const published = this.#publishFrom(req, principal, fields.channel ?? DEFAULT_CHANNEL, fields.data, key);
    if (!(published instanceof Promise)) return answerPublished(res, published);
    published.then(
      (message) => answerPublished(res, message),
      (error: unknown) => this.#host.fail(res, error),
    );
  }

  /** `{"channel"?, "messages": [{"channel"?, "data"}, …]}` → `200 {"results": [{"id","channel"} | {"error"}, …]}`. */
  #publishBatch(req: ExchangeRequest, res: ExchangeResponse, principal: Principal, fields: Record<string, unknown>, bytes: number): void {
    const { maxBatchBytes, maxBatchMessages } = this.#host.options;
    if (bytes > maxBatchBytes) throw new LadderError("payload_too_large", `a batch body is at most ${maxBatchBytes} bytes`);
    const items = batchItems(fields.messages, maxBatchMessages);
    const fallback = fields.channel ?? DEFAULT_CHANNEL;
    publishEach(items, (item) => {
      const message = batchItem(item);
      return this.#publishFrom(req, principal, message.channel ?? fallback, message.data);
    }).then((outcomes) => {
      const results = outcomes.map((outcome) => (isBatchError(outcome) ? outcome : { id: outcome.id, channel: outcome.channel }));
      sendJson(res, 200, { results });
    });
  }

  /** One publish over HTTP: the channel, the caller's right to it and its rate, then the engine. */
  #publishFrom(req: ExchangeRequest, principal: Principal, channel: unknown, data: unknown, key?: string): Published | Promise<Published> {
    const host = this.#host;
    const name = checkChannel(channel);
    const access = host.access;
    const viaHook = access.enabled && access.publishNeedsHook(principal, name);
    if (access.limitsPublishes) access.takePublish(principal, host.clientIp(req));
    if (!viaHook) return host.publish(name, data, key);
    // Under a `hook` rule the app decides, and may replace the data, before the hub publishes.
    return access.askPublishHook(principal, name, data, host.facts(req, "http", [name])).then((checked) => host.publish(name, checked, key));
  }
}

/** `201 {"id","channel"}`, or `200` with `"duplicate": true` for a key already in the log. */
function answerPublished(res: ExchangeResponse, message: Published): void {
  if (message.duplicate) sendJsonText(res, 200, `{"id":${JSON.stringify(message.id)},"channel":"${message.channel}","duplicate":true}`);
  else sendJsonText(res, 201, `{"id":${JSON.stringify(message.id)},"channel":"${message.channel}"}`);
}
