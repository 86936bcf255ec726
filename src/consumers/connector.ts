/**
 * The contract between the consumer agent and one encryptor (a strongSwan charon, a MACsec port, a script).
 *
 * The agent owns the schedule and the handoff with the peer agent; a connector only knows how to put a key into
 * its encryptor. One rotation, as both agents see it:
 *
 *   master agent                      slave agent
 *   enc_keys at its KME  ─ key_IDs ─▶ dec_keys at its own KME
 *                                     connector.stage(next)          (usable, not yet in service)
 *                        ◀─ staged ─
 *   connector.stage(next)
 *   connector.activate(next)          (the encryptor switches: from here traffic uses the new key)
 *                        ─ active ─▶  connector.activate(next)
 *   connector.retire(previous)        connector.retire(previous)
 *
 * Keys reach a connector only as bytes in memory: never on a command line, in the environment, or in a log line.
 * Files a connector writes for its encryptor are mode 0600 and are removed by `retire`/`close`.
 */
export interface ConsumerKey {
  /** The ETSI key_ID (a UUID): both agents know the key by it; connectors may derive identifiers from it (PPK_ID, CKN). */
  readonly keyId: string;
  /** The key bytes. Never logged, never put in an error message. */
  readonly key: Buffer;
}

export type AgentRole = 'master' | 'slave';

/** What the agent tells a connector about the binding it serves (the rest of its settings are connector-specific). */
export interface ConnectorContext {
  /** The binding's name from the agent's config, for log lines and file names. */
  readonly binding: string;
  readonly role: AgentRole;
  /** A private directory the connector may use for generated files (created by the agent, mode 0700). */
  readonly workDir: string;
  readonly log: import('pino').Logger;
}

export interface Connector {
  /**
   * Make `key` usable by the encryptor without taking the current key out of service, so that the peer can switch
   * to it at any time afterwards (e.g. strongSwan: load the PPK; static MACsec: add the receive SA).
   * Idempotent for the same keyId (the agent repeats it after a restart). Throws when the encryptor refused it;
   * the current key then stays in service.
   */
  stage(key: ConsumerKey): Promise<void>;
  /**
   * Put a staged key in service. The master's agent calls it only after both sides staged the key; the slave's
   * after the master says it switched. Idempotent. Throws when the encryptor refused: the agent keeps the previous
   * key and retries or fails by the binding's policy.
   * The master's agent may also call it with the key it just replaced (not yet retired) to switch back, when the
   * slave lost the new key in a restart before switching (docs/agent.md, "Crash points").
   */
  activate(key: ConsumerKey): Promise<void>;
  /** Remove a key that is no longer in service (the previous one after a rotation). Idempotent; unknown keyId is fine. */
  retire(keyId: string): Promise<void>;
  /**
   * Fail closed: take the protected traffic down because no key young enough is left (the binding's policy chose
   * fail_closed). Idempotent. A later `activate` brings traffic back.
   */
  shutDown(reason: string): Promise<void>;
  /**
   * Release sockets and files; the encryptor keeps its state. A restarted agent holds no key bytes: it relies on the
   * encryptor still having the key in service, and only ever `retire`s (by keyId) what it staged before the restart.
   */
  close(): Promise<void>;
}

/**
 * A connector type: `settings` is the binding's `connector` object from the agent's config, already parsed as JSON.
 * The factory validates it and throws a `ConnectorConfigError` naming the bad field (the agent refuses to start).
 */
export interface ConnectorFactory {
  readonly type: string;
  create(settings: Record<string, unknown>, context: ConnectorContext): Connector;
}

export class ConnectorConfigError extends Error {
  constructor(readonly field: string, message: string) {
    super(`${field}: ${message}`);
    this.name = 'ConnectorConfigError';
  }
}
