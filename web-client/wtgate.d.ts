// Type declarations of wtgate.js. Kept in sync by hand; checked by `tsc` on
// tests/types/usage.ts (web-client/run-tests.sh).

/** A u64 of the wire: a number when ≤ Number.MAX_SAFE_INTEGER, otherwise a bigint. */
export type U64 = number | bigint;

/** A body to send: strings go as UTF-8. */
export type Body = string | Uint8Array | ArrayBuffer;

/** A certificate hash: 64 hex digits (`:` separators allowed), the 32 bytes, or WebTransport's form. */
export type CertificateHash = string | Uint8Array | { algorithm: string; value: BufferSource };

/** How a client reaches the server: WebTransport (HTTP/3), or one WebSocket (PROTOCOL.md §16). */
export type Transport = 'webtransport' | 'websocket';

/** Protocol version sent in `Hello`. */
export const PROTOCOL_VERSION: 1;

/** Largest volatile (datagram) body the server relays, in bytes. */
export const MAX_VOLATILE_BODY: 1024;

/** Error codes of `Error` frames and session close codes. */
export const ErrorCode: Readonly<{
  Protocol: 1;
  Unauthorized: 2;
  Forbidden: 3;
  UnsupportedVersion: 4;
  FrameTooLarge: 5;
  RateLimited: 6;
  TooManyRooms: 7;
  InvalidRoom: 8;
  NotJoined: 9;
  AlreadyJoined: 10;
  UnknownCommand: 11;
  SlowConsumer: 12;
  GoingAway: 13;
  HelloTimeout: 14;
  TooManySessions: 15;
  Internal: 16;
  TokenExpired: 17;
  Rejected: 18;
  BackendUnavailable: 19;
}>;

/** The name of an error code, e.g. `'Unauthorized'`; `'Other(n)'` for unknown codes. */
export function errorName(code: number): string;

/** What went wrong, see {@link WtgateError}. */
export type ErrorKind = 'unsupported' | 'unreachable' | 'server' | 'closed' | 'disconnected' | 'protocol' | 'invalid';

/** Every error the library raises or emits. */
export class WtgateError extends Error {
  readonly name: 'WtgateError';
  /**
   * - `unsupported`: none of the transports exists in this browser (or it is not a secure context);
   * - `unreachable`: the session could not be opened (server down, UDP blocked, unknown
   *   namespace, certificate not accepted; browsers do not tell these apart); after a
   *   fallback the message says what each transport reported;
   * - `server`: the server refused, see `code`;
   * - `closed`: the session ended;
   * - `disconnected`: the client is between sessions (reconnecting) or closed;
   * - `protocol`: the server sent something this client cannot understand;
   * - `invalid`: a bad argument.
   */
  readonly kind: ErrorKind;
  /** The server's error code (an {@link ErrorCode} value) or close code, when there is one. */
  readonly code?: number;
  /** The name of `code`, e.g. `'Unauthorized'`. */
  readonly codeName?: string;
  /** The URL of the session concerned. */
  readonly url?: string;
  constructor(kind: ErrorKind, message: string, details?: { code?: number; url?: string; cause?: unknown });
}

/** Options of {@link connect}. */
export interface ConnectOptions {
  /** HS256 token, or a function called before every (re)connection (to refresh expired tokens). */
  token: string | (() => string | Promise<string>);
  /**
   * Hashes of a self-signed certificate; a function is called before every
   * (re)connection. WebTransport only: browsers take no hashes for WebSockets.
   */
  serverCertificateHashes?: CertificateHash[] | (() => CertificateHash[] | Promise<CertificateHash[]>);
  /**
   * Automatic reconnection (default on: 250 ms doubling up to 10 s, with jitter,
   * forever). A page shown again or a browser back online skips the rest of a delay.
   */
  reconnect?: boolean | { initialDelay?: number; maxDelay?: number; maxAttempts?: number };
  /** Milliseconds to wait for a session and its `Welcome` (default 10 000). */
  timeout?: number;
  /**
   * The transports to use, in order (default `['webtransport', 'websocket']`): the
   * WebSocket is tried when WebTransport is missing, fails, or has not opened within
   * `webtransportTimeout`; not when the server refused (e.g. `Unauthorized`).
   */
  transports?: Transport[];
  /**
   * Milliseconds WebTransport has to open before the WebSocket is tried (default
   * 1200: one QUIC handshake with room to spare). Only when a WebSocket may follow.
   */
  webtransportTimeout?: number;
  /**
   * After a fallback, milliseconds during which later connections to the same server
   * (reconnections, other namespaces, other clients of the page) go straight to the
   * WebSocket; the first one after it tries WebTransport again (default 300 000: 5 minutes).
   */
  webtransportRetry?: number;
  /**
   * The WebSocket URL (default: `url` with `wss:`, same host, port and path). A
   * development server with a self-signed certificate answers on `ws://127.0.0.1:8080/NAMESPACE`.
   */
  websocketUrl?: string;
}

/** A position in a room: pass a room's `position` as `since` to be replayed what was missed. */
export interface Since {
  epoch: U64;
  seq: U64;
}

/** A received payload: the bytes and their UTF-8 decoding. */
export interface Payload {
  readonly body: Uint8Array;
  /** `body` decoded as UTF-8 (invalid sequences become U+FFFD). */
  readonly text: string;
}

export interface MessageEvent extends Payload {
  readonly room: string;
  readonly epoch: U64;
  readonly seq: U64;
  readonly from: string;
  /** Server time at publish, ms since the Unix epoch. */
  readonly ts: U64;
  /** Whether it was missed and replayed through `since`. */
  readonly replayed: boolean;
}

export interface PresenceEvent {
  readonly kind: 'join' | 'leave' | 'sync';
  /** The user who came or went (absent for `sync`). */
  readonly user?: string;
  readonly members: string[];
}

export interface VolatileEvent extends Payload {
  readonly room: string;
  readonly from: string;
}

export interface JoinEvent {
  /** False after `join()`, true after an automatic rejoin. */
  readonly rejoin: boolean;
  /** With `since`: whether everything missed is replayed; if false, reload the room's state. */
  readonly recovered: boolean;
  readonly epoch: U64;
  /** The room's last seq when joined. */
  readonly seq: U64;
  readonly since: Since | null;
  readonly members: string[];
}

export interface RoomEvents {
  message: MessageEvent;
  presence: PresenceEvent;
  volatile: VolatileEvent;
  join: JoinEvent;
  error: WtgateError;
}

export type RoomState = 'joining' | 'joined' | 'rejoining' | 'left';

/** Something to subscribe to; `on` and `once` return a function that removes the listener. */
export interface Events<E> {
  on<K extends keyof E & string>(event: K, listener: (payload: E[K]) => void): () => void;
  once<K extends keyof E & string>(event: K, listener: (payload: E[K]) => void): () => void;
  off<K extends keyof E & string>(event: K, listener: (payload: E[K]) => void): void;
}

/** A joined room, from {@link Client.join}. */
export interface Room extends Events<RoomEvents> {}
export class Room {
  private constructor();
  readonly name: string;
  /** The room's current life (`Joined.epoch`). */
  readonly epoch: U64 | null;
  /** Highest seq delivered in this epoch. */
  readonly lastSeq: U64;
  /** Whether the last (re)join replayed everything after `since`. */
  readonly recovered: boolean;
  /** The room's handle in the current session, or null while not joined. */
  readonly handle: number | null;
  readonly state: RoomState;
  /** The room's users, as last known. */
  readonly members: string[];
  /** Where this client is in the room; keep it to pass as `since` later. */
  readonly position: Since | null;
  /** Publishes; resolves with the message's seq. */
  publish(body: Body): Promise<U64>;
  /** Sends a datagram to the other members; false when not sent (not joined right now). */
  sendVolatile(body: Body): boolean;
  /** Leaves the room. */
  leave(): Promise<void>;
}

export interface ConnectEvent {
  readonly user: string;
  readonly session: U64;
  /** True after an automatic reconnection. */
  readonly reconnect: boolean;
  /** The transport of this session. */
  readonly transport: Transport;
}

export interface DisconnectEvent {
  readonly code: number | null;
  readonly reason: string;
  readonly error: WtgateError | null;
  readonly willReconnect: boolean;
}

export interface ReconnectingEvent {
  readonly attempt: number;
  /** Milliseconds until this attempt. */
  readonly delay: number;
  readonly error: WtgateError | null;
}

export interface CloseEvent {
  readonly code: number | null;
  readonly reason: string;
  readonly error: WtgateError | null;
}

export interface OnlineEvent {
  readonly kind: 'join' | 'leave' | 'sync';
  readonly user?: string;
  readonly users: string[];
}

export interface BroadcastEvent extends Payload {
  readonly from: string;
  readonly ts: U64;
}

export interface Notification extends Payload {
  readonly id: U64;
  readonly kind: string;
  /** When it was stored, ms since the Unix epoch. */
  readonly ts: U64;
  /** Acknowledges it: the server removes it from the inbox. */
  ack(): Promise<void>;
}

export interface ClientEvents {
  connect: ConnectEvent;
  disconnect: DisconnectEvent;
  reconnecting: ReconnectingEvent;
  close: CloseEvent;
  online: OnlineEvent;
  broadcast: BroadcastEvent;
  notification: Notification;
  goaway: { readonly message: string };
  error: WtgateError;
}

export type ClientState = 'connecting' | 'connected' | 'reconnecting' | 'closed';

/** A connection to one namespace, from {@link connect}; reconnects on its own. */
export interface Client extends Events<ClientEvents> {}
export class Client {
  private constructor();
  readonly url: string;
  /** The WebSocket URL used when the client falls back (or is told to use it). */
  readonly websocketUrl: string;
  /** The transport of the current (or last) session. */
  readonly transport: Transport;
  /** The user id (the token's `sub`). */
  readonly user: string;
  /** The server's id of the current session. */
  readonly sessionId: U64 | null;
  readonly state: ClientState;
  /** Users online in the namespace, or null where namespace presence is off. */
  readonly onlineUsers: string[] | null;
  readonly rooms: Room[];
  /** Notifications received and not yet acknowledged. */
  readonly notifications: Notification[];
  /** Joins a room (or returns it if joined); `since` resumes from an earlier position. */
  join(name: string, options?: { since?: Since | null }): Promise<Room>;
  room(name: string): Room | undefined;
  /** Asks the server who is online in the namespace. */
  fetchOnline(): Promise<string[]>;
  /** Acknowledges a notification. */
  ack(id: U64): Promise<void>;
  /**
   * Calls `method` on the namespace's backend (its RPC hook): `data` goes as JSON
   * (strings and bytes as they are); resolves with the reply parsed as JSON, or its
   * bytes when it is not JSON.
   */
  rpc<T = unknown>(method: string, data?: unknown): Promise<T | Uint8Array>;
  /** What the connect hook attached to the current session (JSON, or bytes), or null. */
  readonly connectData: unknown;
  /**
   * Replaces the session's token before it expires (default: calls the `token`
   * function; the client also does so by itself a minute before `exp`).
   */
  refresh(token?: string): Promise<void>;
  /** Closes for good. */
  close(): Promise<void>;
}

/**
 * Connects to a namespace (`https://host:port/chat`) over WebTransport, or a
 * WebSocket when WebTransport does not get through (see `transports`), and resolves once welcomed.
 * Rejects with a {@link WtgateError}: `unsupported`, `unreachable` (says what was
 * tried), `server` with `code` (e.g. `ErrorCode.Unauthorized`), `invalid`.
 */
export function connect(url: string, options: ConnectOptions): Promise<Client>;
