import { ConnectorConfigError } from '../connector.js';

/**
 * Typed reads of a binding's `connector` object for the MACsec connectors. Each throws a ConnectorConfigError that
 * names the field as the operator wrote it (`connector.interface`), so a bad config stops the agent at boot.
 */
export class SettingsReader {
  constructor(
    private readonly settings: Record<string, unknown>,
    private readonly prefix = 'connector',
  ) {}

  private field(name: string): string {
    return `${this.prefix}.${name}`;
  }

  /** A non-empty string without whitespace or control characters (names end up in config files and commands). */
  word(name: string, fallback?: string): string {
    const v = this.settings[name] ?? fallback;
    if (typeof v !== 'string' || !/^[^\s\x00-\x1f"\\]+$/.test(v)) {
      throw new ConnectorConfigError(this.field(name), v === undefined ? 'is required' : 'must be a non-empty string without spaces, quotes or control characters');
    }
    return v;
  }

  integer(name: string, min: number, max: number, fallback?: number): number {
    const v = this.settings[name] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new ConnectorConfigError(this.field(name), v === undefined ? 'is required' : `must be an integer from ${min} to ${max}`);
    }
    return v;
  }

  boolean(name: string, fallback: boolean): boolean {
    const v = this.settings[name] ?? fallback;
    if (typeof v !== 'boolean') throw new ConnectorConfigError(this.field(name), 'must be true or false');
    return v;
  }

  /** The key length the encryptor expects: 16 (AES-128) or 32 (AES-256) bytes. */
  keyBytes(name: string): 16 | 32 {
    const v = this.settings[name];
    if (v !== 16 && v !== 32) throw new ConnectorConfigError(this.field(name), v === undefined ? 'is required (16 or 32)' : 'must be 16 or 32 (bytes)');
    return v;
  }

  /** Refuses settings this connector does not know, so a misspelt option is not silently ignored. */
  onlyKnown(known: readonly string[]): void {
    for (const name of Object.keys(this.settings)) {
      if (!known.includes(name)) throw new ConnectorConfigError(this.field(name), `unknown setting; known: ${known.join(', ')}`);
    }
  }
}
