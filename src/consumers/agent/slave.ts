import { Binding } from './binding.js';
import type { PeerAnswer, PeerHandler, PeerStep } from './peer-link.js';

/**
 * The slave's end of a binding: it follows the master's messages, one at a time, each idempotent by key_ID
 * (docs/agent.md). It never switches on its own; its only timer is the maximum-age check.
 */
export class SlaveBinding extends Binding implements PeerHandler {
  get peerIdentity(): string {
    return this.config.peer.identity;
  }

  /** A restart right after a switch may have left the replaced key unretired: retire it now. */
  override async start(): Promise<void> {
    await super.start();
    const previous = this.state.previous;
    if (previous && this.state.current) {
      await this.serial(async () => {
        await this.connector.retire(previous.keyId);
        this.save({ previous: undefined });
      }).catch((err: Error) => this.log.warn({ keyId: previous.keyId, error: err.message }, 'retiring the previous key failed'));
    }
  }

  handle(step: PeerStep, keyId: string): Promise<PeerAnswer> {
    return this.serial(async () => {
      if (this.closed) throw new Error('the agent is stopping');
      try {
        if (step === 'offer') return await this.offer(keyId);
        if (step === 'activate') return await this.activate(keyId);
        return await this.abort(keyId);
      } catch (err) {
        this.recordError(`${step} ${keyId}: ${(err as Error).message}`);
        throw err;
      }
    });
  }

  /**
   * Fetch the key at this side's KME and stage it. A repeated offer of a key this process already holds stages it
   * again (connectors are idempotent); one it does not hold (this agent restarted) is fetched again, which the KME
   * refuses once the key was delivered: then the answer is "gone" and the master abandons the key_ID.
   */
  private async offer(keyId: string): Promise<PeerAnswer> {
    if (this.state.current?.keyId === keyId) return 'active';
    const pending = this.state.pending;
    if (pending && pending.keyId !== keyId) await this.drop(pending.keyId, 'the master offered a newer key');
    let key = this.keys.get(keyId);
    if (!key) {
      const startedAt = pending?.keyId === keyId ? pending.startedAt : new Date().toISOString();
      this.save({ pending: { keyId, step: 'fetching', startedAt } });
      const got = await this.parts.kme.decKey(this.config.peer.sae_id, keyId);
      if (got === 'gone') {
        await this.drop(keyId, 'its KME does not have it (expired, or fetched before this agent restarted)');
        this.recordError(`key ${keyId} is not available at this side's KME; the master will abandon it`);
        return 'gone';
      }
      if (got.keyId !== keyId) throw new Error(`the KME answered key ${got.keyId} for ${keyId}`);
      this.keys.set(keyId, (key = got));
    }
    await this.connector.stage(key);
    this.save({ pending: { ...this.state.pending!, step: 'staged' } });
    this.log.info({ keyId }, 'rotation: key fetched (dec_keys) and staged');
    return 'staged';
  }

  /** Switch to a staged key, then retire the one it replaces. "gone" when this process does not hold it. */
  private async activate(keyId: string): Promise<PeerAnswer> {
    if (this.state.current?.keyId === keyId) return 'active';
    const key = this.keys.get(keyId);
    if (!key || this.state.pending?.keyId !== keyId) {
      if (this.state.pending?.keyId === keyId) await this.drop(keyId, 'its bytes were lost in a restart');
      return 'gone';
    }
    const now = Date.now();
    await this.switchTo(key, {
      pending: undefined,
      rotations: this.state.rotations + 1,
      lastRotationAt: new Date(now).toISOString(),
      nextRotationAt: new Date(now + this.config.rotation_seconds * 1000).toISOString(),
      lastError: undefined,
    });
    const previous = this.state.previous;
    if (previous) {
      await this.connector.retire(previous.keyId).catch((err: Error) => this.log.warn({ keyId: previous.keyId, error: err.message }, 'retiring the previous key failed'));
    }
    this.save({ previous: undefined });
    this.keepOnly(keyId);
    this.log.info({ keyId, retired: previous?.keyId }, 'rotation complete: switched to the new key');
    return 'active';
  }

  private async abort(keyId: string): Promise<PeerAnswer> {
    if (this.state.pending?.keyId === keyId) await this.drop(keyId, 'the master abandoned it');
    return 'aborted';
  }

  private async drop(keyId: string, why: string): Promise<void> {
    await this.connector.retire(keyId).catch((err: Error) => this.log.warn({ keyId, error: err.message }, 'retiring a dropped key failed'));
    this.keys.delete(keyId);
    this.save({ pending: undefined });
    this.log.warn({ keyId, why }, 'pending key dropped; the current key stays in service');
  }
}
