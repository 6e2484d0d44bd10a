/**
 * `ladder-hub/react`: hooks over one client per app. React is a peer dependency and nothing here is in the core
 * client bundle. Components that use the same channel share one client subscription, counted: StrictMode's
 * mount–unmount–mount and fast re-renders take and give back a reference, and the subscription itself ends
 * a tick after the last one is given back (so a remount in the same tick keeps it, cursor and all).
 */
import { createContext, createElement, useCallback, useContext, useRef, useSyncExternalStore, type ReactElement, type ReactNode } from "react";
import type { ChannelMap, DataOf, LadderClient, PublishResult, Subscription } from "../client/index.js";
import type { ClientState, Gap, Message, MessageId, TransportName } from "../client/index.js";
import type { Member } from "../protocol/index.js";

const ClientContext = createContext<LadderClient | null>(null);

/** Makes `client` (created once by the app, e.g. at module level) available to the hooks below it. */
export function LadderProvider<M extends ChannelMap>(props: { readonly client: LadderClient<M>; readonly children?: ReactNode }): ReactElement {
  return createElement(ClientContext.Provider, { value: props.client as unknown as LadderClient }, props.children);
}

export function useLadderClient<M extends ChannelMap = ChannelMap>(): LadderClient<M> {
  const client = useContext(ClientContext);
  if (!client) throw new Error("useLadderClient needs a <LadderProvider client={…}> above it");
  return client as unknown as LadderClient<M>;
}

export interface ConnectionState {
  readonly state: ClientState;
  readonly transport: TransportName | null;
}

const connectionSnapshots = new WeakMap<LadderClient, ConnectionState>();

function connectionOf(client: LadderClient): ConnectionState {
  const last = connectionSnapshots.get(client);
  if (last && last.state === client.state && last.transport === client.transport) return last;
  const next = { state: client.state, transport: client.transport };
  connectionSnapshots.set(client, next);
  return next;
}

/** The client's state and rung, re-rendering when either changes. */
export function useConnectionState(): ConnectionState {
  const client = useLadderClient();
  const subscribe = useCallback(
    (notify: () => void) => {
      const off = [client.on("state", notify), client.on("transport", notify)];
      return () => off.forEach((f) => f());
    },
    [client],
  );
  return useSyncExternalStore(subscribe, () => connectionOf(client));
}

export interface ChannelSnapshot<T> {
  /** The latest messages, oldest first, at most `keep` (the largest asked by the channel's hooks). */
  readonly messages: readonly Message<T>[];
  /** With `presence: true`: the channel's members. */
  readonly members: readonly Member[];
  /** The last gap signal, if any: reload state from your own store. */
  readonly gap: Gap | null;
}

interface Shared {
  readonly channel: string;
  subscription: Subscription<unknown>;
  presence: boolean;
  keep: number;
  refs: number;
  release: ReturnType<typeof setTimeout> | undefined;
  snapshot: ChannelSnapshot<unknown>;
  readonly listeners: Set<() => void>;
  readonly handlers: Set<(message: Message<unknown>) => void>;
}

const shared = new WeakMap<LadderClient, Map<string, Shared>>();

function attach(client: LadderClient, entry: Shared, presence: boolean, since: MessageId | undefined): void {
  const old = entry.subscription as Subscription<unknown> | undefined;
  const sub = client.subscribe(entry.channel, { ...(since ? { since } : {}), presence }) as Subscription<unknown>;
  const update = (patch: Partial<ChannelSnapshot<unknown>>): void => {
    entry.snapshot = { ...entry.snapshot, ...patch };
    entry.listeners.forEach((l) => l());
  };
  sub.on("message", (message) => {
    update({ messages: entry.keep > 0 ? [...entry.snapshot.messages, message].slice(-entry.keep) : [] });
    entry.handlers.forEach((h) => h(message));
  });
  sub.on("gap", (gap) => update({ gap }));
  const members = (): void => update({ members: sub.presence() });
  sub.on("join", members);
  sub.on("leave", members);
  entry.subscription = sub;
  entry.presence = presence;
  // Taken over after the new one joined, so the client never drops the channel (or its cursor) in between.
  old?.unsubscribe();
  if (presence) members();
}

function acquire(client: LadderClient, channel: string, options: { presence: boolean; keep: number; since: MessageId | undefined }): Shared {
  let channels = shared.get(client);
  if (!channels) shared.set(client, (channels = new Map()));
  let entry = channels.get(channel);
  if (!entry) {
    entry = { channel, subscription: undefined as unknown as Subscription<unknown>, presence: false, keep: options.keep, refs: 0, release: undefined, snapshot: { messages: [], members: [], gap: null }, listeners: new Set(), handlers: new Set() };
    channels.set(channel, entry);
    attach(client, entry, options.presence, options.since);
  } else if (options.presence && !entry.presence) {
    attach(client, entry, true, undefined);
  }
  entry.keep = Math.max(entry.keep, options.keep);
  clearTimeout(entry.release);
  entry.refs++;
  return entry;
}

function giveBack(client: LadderClient, entry: Shared): void {
  if (--entry.refs > 0) return;
  entry.release = setTimeout(() => {
    if (entry.refs > 0) return;
    entry.subscription.unsubscribe();
    shared.get(client)?.delete(entry.channel);
  }, 0);
}

export interface UseChannelOptions<T> {
  /** Resume after this id (used by the first hook that opens the channel). */
  readonly since?: MessageId;
  /** Called once per message (the latest function given is used; no re-subscription when it changes). */
  readonly onMessage?: (message: Message<T>) => void;
  /** Keep the channel's members (`members` in the result). */
  readonly presence?: boolean;
  /** How many of the latest messages to keep (default 50). */
  readonly keep?: number;
}

export interface ChannelResult<T> extends ChannelSnapshot<T>, ConnectionState {
  /** Publishes on this channel (queued while disconnected; see ladder-hub/client). */
  publish(data: T): Promise<PublishResult>;
}

const EMPTY: ChannelSnapshot<never> = { messages: [], members: [], gap: null };

/** A channel's latest messages (and members), and the connection state; one client subscription per channel. */
export function useChannel<T = unknown, M extends ChannelMap = ChannelMap, C extends string = string>(channel: C, options: UseChannelOptions<DataOf<M, C, T>> = {}): ChannelResult<DataOf<M, C, T>> {
  const client = useLadderClient<M>() as unknown as LadderClient;
  const onMessage = useRef(options.onMessage);
  onMessage.current = options.onMessage;
  const entryRef = useRef<Shared | null>(null);
  const presence = options.presence === true;
  const keep = options.keep ?? 50;
  const since = options.since;
  const subscribe = useCallback(
    (notify: () => void) => {
      const entry = acquire(client, channel, { presence, keep, since });
      entryRef.current = entry;
      const handler = (m: Message<unknown>): void => onMessage.current?.(m as Message<DataOf<M, C, T>>);
      entry.listeners.add(notify);
      entry.handlers.add(handler);
      notify();
      return () => {
        entry.listeners.delete(notify);
        entry.handlers.delete(handler);
        if (entryRef.current === entry) entryRef.current = null;
        giveBack(client, entry);
      };
    },
    [client, channel, presence, keep, since],
  );
  const snapshot = useSyncExternalStore(
    subscribe,
    () => (entryRef.current?.channel === channel ? entryRef.current.snapshot : (shared.get(client)?.get(channel)?.snapshot ?? EMPTY)),
  ) as ChannelSnapshot<DataOf<M, C, T>>;
  const connection = useConnectionState();
  return { ...snapshot, ...connection, publish: (data) => client.publish(channel, data as never) };
}

/** A channel's members, live (joins and leaves), with presence turned on for it. */
export function usePresence(channel: string): readonly Member[] {
  return useChannel(channel, { presence: true, keep: 0 }).members;
}
