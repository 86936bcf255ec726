import { Binding, type BindingParts } from './binding.js';
import type { PeerClient } from './peer-link.js';

/** A rotation that failed in a way that calls for a fresh one at once rather than after retry_seconds. */
class RotateAgainNow extends Error {}

/**
 * The master's end of a binding: it schedules rotations and drives each one (docs/agent.md, "The handoff"):
 * enc_keys → offer to the slave → stage and activate here → tell the slave "activate" → retire the previous key.
 * Each step is recorded before the next starts, so a restarted master knows where it stopped.
 */
export class MasterBinding extends Binding {
  private timer?: NodeJS.Timeout;
  private rotateAgainAfterThis = false;

  constructor(
    parts: BindingParts,
    private readonly peer: PeerClient,
  ) {
    super(parts);
  }

  override async start(): Promise<void> {
    await super.start();
    // Not awaited: telling an unreachable slave to abort can take the peer timeout, and other bindings wait to start.
    this.serial(() => this.recover()).then(
      () => {
        const next = this.state.nextRotationAt ? Date.parse(this.state.nextRotationAt) : NaN;
        this.schedule(this.state.current && !this.state.pending && next > Date.now() ? next - Date.now() : 0);
      },
      (err: Error) => {
        this.recordError(`resuming after a restart: ${err.message}`);
        this.schedule(this.config.retry_seconds * 1000);
      },
    );
  }

  override async close(): Promise<void> {
    clearTimeout(this.timer);
    await super.close();
    this.peer.close();
  }

  /**
   * After a restart the bytes of a pending key are gone. Before this side switched, the key is abandoned (the
   * slave is told, best effort; an offer of another key_ID makes it drop the old one anyway). After it switched,
   * the rotation goes on: the slave may still hold the key and only needs the "activate".
   */
  private async recover(): Promise<void> {
    const p = this.state.pending;
    if (!p) return;
    if (p.step === 'activated') {
      // Whether this side's encryptor finished switching is not known for sure: a fresh rotation follows at once.
      this.rotateAgainAfterThis = true;
      return;
    }
    await this.peer.send('abort', p.keyId).catch((err: Error) => this.log.warn({ keyId: p.keyId, error: err.message }, 'could not tell the slave to abort'));
    await this.abandon(p.keyId, 'this agent restarted before switching to it (its bytes were only in memory)');
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    if (this.closed) return;
    this.save({ nextRotationAt: new Date(Date.now() + delayMs).toISOString() });
    this.timer = setTimeout(() => void this.tick(), delayMs);
  }

  private async tick(): Promise<void> {
    if (this.closed) return;
    try {
      await this.serial(() => this.rotate());
      this.schedule(this.rotateAgainAfterThis ? 0 : this.config.rotation_seconds * 1000);
      this.rotateAgainAfterThis = false;
    } catch (err) {
      if (this.closed) return;
      this.recordError((err as Error).message);
      this.schedule(err instanceof RotateAgainNow ? 0 : this.config.retry_seconds * 1000);
    }
  }

  /** One rotation, from wherever the last one stopped. Throws (with the current key still in service) on failure. */
  private async rotate(): Promise<void> {
    if (!this.state.pending) {
      const key = await this.parts.kme.encKey(this.config.peer.sae_id, this.config.key_size);
      this.keys.set(key.keyId, key);
      this.save({ pending: { keyId: key.keyId, step: 'requested', startedAt: new Date().toISOString() } });
      this.log.info({ keyId: key.keyId }, 'rotation: new key from the KME (enc_keys); offering it to the slave');
    }
    let p = this.state.pending!;
    if (p.step === 'requested') {
      const answer = await this.peer.send('offer', p.keyId);
      if (answer === 'gone') {
        await this.abandon(p.keyId, 'the slave cannot get it from its KME');
        throw new Error(`the slave could not fetch key ${p.keyId}; abandoned`);
      }
      this.save({ pending: (p = { ...p, step: 'peer_staged' }) });
    }
    if (p.step === 'peer_staged') {
      const key = this.keys.get(p.keyId);
      if (!key) {
        await this.abandon(p.keyId, 'its bytes are not in memory');
        throw new RotateAgainNow(`key ${p.keyId} lost before switching; abandoned`);
      }
      await this.connector.stage(key);
      // The intent is written first: a restart from here on goes forward (the slave may already hold the key).
      this.save({ pending: (p = { ...p, step: 'activated' }) });
      await this.switchTo(key);
      this.log.info({ keyId: p.keyId }, 'rotation: the slave staged the key; this side switched to it');
    }
    const answer = await this.peer.send('activate', p.keyId);
    if (answer === 'gone') await this.rollBack(p.keyId);
    if (this.state.current?.keyId !== p.keyId) {
      // A restart came between the intent and the record of the switch: count the switch as done.
      this.save({ previous: this.state.current, current: { keyId: p.keyId, activatedAt: new Date().toISOString() } });
    }
    const previous = this.state.previous;
    if (previous) await this.connector.retire(previous.keyId);
    this.save({ pending: undefined, previous: undefined, rotations: this.state.rotations + 1, lastRotationAt: new Date().toISOString(), lastError: undefined });
    this.keepOnly(p.keyId);
    this.log.info({ keyId: p.keyId, retired: previous?.keyId }, 'rotation complete: both sides use the new key');
  }

  /**
   * The slave lost a key this side already switched to (it restarted between staging and activating): go back to
   * the previous key if its bytes are still here, else start a fresh rotation at once. Always throws.
   */
  private async rollBack(keyId: string): Promise<never> {
    const previous = this.state.previous;
    const old = previous && this.keys.get(previous.keyId);
    if (previous && old) {
      await this.connector.activate(old);
      await this.connector.retire(keyId).catch(() => undefined);
      this.keys.delete(keyId);
      this.save({ current: previous, previous: undefined, pending: undefined });
      throw new Error(`the slave lost key ${keyId} before switching to it; back on key ${previous.keyId}`);
    }
    this.save({ pending: undefined });
    throw new RotateAgainNow(`the slave lost key ${keyId} before switching to it and this agent has no earlier key to go back to; rotating again now`);
  }

  private async abandon(keyId: string, why: string): Promise<void> {
    await this.connector.retire(keyId).catch((err: Error) => this.log.warn({ keyId, error: err.message }, 'retiring an abandoned key failed'));
    this.keys.delete(keyId);
    this.save({ pending: undefined });
    this.log.warn({ keyId, why }, 'rotation abandoned: this key_ID is dropped and the current key stays in service');
  }
}
