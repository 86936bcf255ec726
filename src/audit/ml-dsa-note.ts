import { ml_dsa65 } from '@noble/post-quantum/ml-dsa.js';
import { keyIdOf, SignatureType, type NoteSigner, type NoteVerifier } from './signed-note.js';

/**
 * The post-quantum signature beside the classical one on every checkpoint: ML-DSA-65 (FIPS 204) from
 * @noble/post-quantum (audited, dependency-free). Its signed-note type is 0xff followed by "ml-dsa-65", so verifiers
 * that know only classical keys skip its line, and the log stays verifiable once elliptic-curve signatures no longer
 * can be trusted. Signatures use FIPS 204's pure mode with the empty context, over the note text.
 *
 * The HSMs this project tests with cannot hold ML-DSA keys; where the secret key is kept (sealed under the KEK, like
 * key material) is the sealer's business, not this file's.
 */
export const ML_DSA_65 = SignatureType.named('ml-dsa-65');

export interface MlDsaKeyPair {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
}

/** A new key pair; deterministic from a 32-byte seed when one is given (tests), else from the system's randomness. */
export function mlDsa65KeyPair(seed?: Uint8Array): MlDsaKeyPair {
  return ml_dsa65.keygen(seed);
}

export function mlDsa65Signer(name: string, keys: MlDsaKeyPair): NoteSigner {
  return {
    name,
    keyId: keyIdOf(name, ML_DSA_65, Buffer.from(keys.publicKey)),
    sign: async (message) => Buffer.from(ml_dsa65.sign(message, keys.secretKey)),
  };
}

export function mlDsa65Verifier(name: string, publicKey: Uint8Array): NoteVerifier {
  return {
    name,
    keyId: keyIdOf(name, ML_DSA_65, Buffer.from(publicKey)),
    verify: (message, signature) => {
      try {
        return ml_dsa65.verify(signature, message, publicKey);
      } catch {
        return false; // a signature of the wrong length, say: not a valid signature
      }
    },
  };
}
