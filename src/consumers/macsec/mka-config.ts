/**
 * The wpa_supplicant configuration for one MACsec port keyed by MKA with a pre-shared CAK (IEEE 802.1X-2010
 * PSK mode). Pure text generation, so tests can compare it byte for byte.
 */
export interface MkaSettings {
  /** The physical port wpa_supplicant runs on (`-i`), also the name of its control socket. */
  interface: string;
  /** wpa_supplicant's control socket directory (`ctrl_interface`), where `wpa_cli -p` looks. */
  ctrlInterface: string;
  cakBytes: 16 | 32;
  /** Key server priority: the lower value wins the election; 255 means never key server. */
  mkaPriority: number;
  integOnly: boolean;
  replayProtect: boolean;
  replayWindow: number;
  /** The port number in this end's SCI. */
  port: number;
}

/** The CA to configure: CKN and CAK as hex, and the key_ID for the comment an operator reads. */
export interface MkaAssociation {
  keyId: string;
  cknHex: string;
  cakHex: string;
}

/**
 * `association` null gives a config with no network block: wpa_supplicant then runs no MKA participant and
 * tears down the MACsec interface it made, which is how this connector fails closed (and its state before the
 * first key).
 */
export function mkaConfigText(binding: string, s: MkaSettings, association: MkaAssociation | null): string {
  const lines = [
    `# Written by the kms agent for binding ${JSON.stringify(binding)} (macsec-mka). Replaced at each rotation: do not edit.`,
    `ctrl_interface=${s.ctrlInterface}`,
    'eapol_version=3',
    'ap_scan=0',
  ];
  if (association) {
    lines.push(
      `# QKD key_ID ${association.keyId}`,
      'network={',
      '\tkey_mgmt=NONE',
      '\teapol_flags=0',
      '\tmacsec_policy=1',
      `\tmacsec_integ_only=${s.integOnly ? 1 : 0}`,
      `\tmacsec_replay_protect=${s.replayProtect ? 1 : 0}`,
      `\tmacsec_replay_window=${s.replayWindow}`,
      `\tmacsec_port=${s.port}`,
      `\tmka_priority=${s.mkaPriority}`,
      `\tmka_ckn=${association.cknHex}`,
      `\tmka_cak=${association.cakHex}`,
      '}',
    );
  } else {
    lines.push('# no key in service: no MKA participant, the secured port is down');
  }
  return lines.join('\n') + '\n';
}
