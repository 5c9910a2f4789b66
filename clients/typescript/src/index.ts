// @umbra-e2ee/sdk: Umbra's end-to-end encryption for browsers and Node.
// The cryptographic core implements docs/wire-format.md byte for byte.
export const WIRE_FORMAT_VERSION = 1;
