/**
 * Who may listen and who may speak, per channel. A rule names a channel pattern (`*` for any run of
 * characters, `{sub}` for the token's subject) and, for each action, who may do it: `anyone`, `token` (a
 * verified token whose grants cover the channel), `nobody` (only backends with an API key may publish) or
 * `hook` (the app's subscribe or publish hook decides, per request; see src/server/hooks/).
 * The first rule that matches wins; channels no rule matches get `defaults`.
 */
import { channelMatches } from "../../protocol/index.js";

export type Permission = "anyone" | "token" | "nobody" | "hook";
export type Action = "subscribe" | "publish";

export interface ChannelRule {
  readonly match: string;
  readonly subscribe?: Permission;
  readonly publish?: Permission;
}

/** Who is asking: anonymous, a verified token, a user the app's connect hook named, or a backend holding an API key. */
export interface Principal {
  readonly kind: "anonymous" | "token" | "hook" | "api-key";
  readonly sub: string | null;
  /** Channel patterns granted by the token's `ladder` claim (may contain `{sub}`). */
  readonly grants: { readonly subscribe: readonly string[]; readonly publish: readonly string[] };
  /** When the token stops being valid, ms since the epoch; null when it does not expire. */
  readonly expiresAt: number | null;
  /**
   * Public info for presence lists (the token's `ladder.info` claim, at most 1 KiB encoded), or what the
   * connect hook said about the user besides its name (passed on to the other hooks).
   */
  readonly info?: unknown;
}

export const ANONYMOUS: Principal = { kind: "anonymous", sub: null, grants: { subscribe: [], publish: [] }, expiresAt: null };

/** `hook`: the rules leave the decision to the app's hook. */
export type Verdict = "allowed" | "unauthenticated" | "forbidden" | "hook";

/** `{sub}` stands for the subject; a pattern with `{sub}` matches nothing for a principal without one. */
export function expandPattern(pattern: string, sub: string | null): string | null {
  if (!pattern.includes("{sub}")) return pattern;
  if (sub === null || !/^[A-Za-z0-9_.:-]+$/.test(sub)) return null;
  return pattern.split("{sub}").join(sub);
}

function matches(pattern: string, channel: string, sub: string | null): boolean {
  const expanded = expandPattern(pattern, sub);
  return expanded !== null && channelMatches(expanded, channel);
}

export function authorize(
  rules: readonly ChannelRule[],
  defaults: Readonly<Record<Action, Permission>>,
  principal: Principal,
  action: Action,
  channel: string,
): Verdict {
  if (principal.kind === "api-key") return "allowed";
  const rule = rules.find((r) => matches(r.match, channel, principal.sub));
  const access = rule?.[action] ?? defaults[action];
  switch (access) {
    case "anyone":
      return "allowed";
    case "hook":
      return "hook";
    case "nobody":
      return principal.kind === "anonymous" ? "unauthenticated" : "forbidden";
    case "token":
      if (principal.kind === "anonymous") return "unauthenticated";
      return principal.grants[action].some((p) => matches(p, channel, principal.sub)) ? "allowed" : "forbidden";
  }
}
