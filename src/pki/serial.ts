/** A certificate's serial number as CRLs and Node print it: upper-case hex, no leading zero bytes. */
export const normalizeSerial = (hex: string): string => hex.replace(/^(00)+(?=.)/, '').toUpperCase();
