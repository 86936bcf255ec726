import { HsmUnavailableError, kekVersionsOf, type KekVersions, type KeyWrapper, type Sealed } from './key-wrapper.js';

/**
 * The KeyWrapper a KME hands to its modules (the barrier, the custody log's keys): one whose connection to the HSM
 * can be replaced while the KME runs — after a KEK version is created or destroyed, a PKCS#11 wrapper's sessions
 * must be opened again (src/lifecycle/kek-rotation.ts). Each call runs on the wrapper in place when it is made;
 * a replaced wrapper keeps serving the calls it has and is closed `graceMs` later.
 */
export class SwappableKeyWrapper implements KeyWrapper, KekVersions {
  private retiring = new Set<{ wrapper: KeyWrapper; timer: NodeJS.Timeout }>();
  private closed = false;

  /** `onError` hears of every encrypt or decrypt that failed (the metrics count them); the caller still gets the error. */
  constructor(
    private inner: KeyWrapper,
    private readonly onError?: (operation: 'encrypt' | 'decrypt', err: unknown) => void,
  ) {}

  get description(): string {
    return this.inner.description;
  }

  get isHardware(): boolean {
    return this.inner.isHardware;
  }

  get needsReopen(): boolean {
    return this.versions().needsReopen;
  }

  currentVersion(): number {
    return this.inner.currentVersion();
  }

  encrypt(plaintext: Uint8Array, aad: Uint8Array): Promise<Sealed> {
    return this.watched('encrypt', this.inner.encrypt(plaintext, aad));
  }

  decrypt(sealed: Sealed, aad: Uint8Array): Promise<Buffer> {
    return this.watched('decrypt', this.inner.decrypt(sealed, aad));
  }

  private watched<T>(operation: 'encrypt' | 'decrypt', call: Promise<T>): Promise<T> {
    const onError = this.onError;
    if (onError) call.then(undefined, (err: unknown) => onError(operation, err));
    return call;
  }

  listVersions(): Promise<number[]> {
    return this.versions().listVersions();
  }

  createVersion(n: number): Promise<void> {
    return this.versions().createVersion(n);
  }

  destroyVersion(n: number): Promise<void> {
    return this.versions().destroyVersion(n);
  }

  /** Puts `next` in place; the wrapper it replaces is closed after `graceMs` (its calls in flight finish first). */
  swap(next: KeyWrapper, graceMs = 10_000): void {
    if (this.closed) {
      void next.close();
      return;
    }
    const wrapper = this.inner;
    this.inner = next;
    const entry = {
      wrapper,
      timer: setTimeout(() => {
        this.retiring.delete(entry);
        void wrapper.close();
      }, graceMs),
    };
    entry.timer.unref();
    this.retiring.add(entry);
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const r of this.retiring) {
      clearTimeout(r.timer);
      await r.wrapper.close();
    }
    this.retiring.clear();
    await this.inner.close();
  }

  private versions(): KekVersions {
    const v = kekVersionsOf(this.inner);
    if (!v) throw new HsmUnavailableError(`${this.inner.description}: its KEK versions cannot be managed`);
    return v;
  }
}
