export type { FileSource, FileStoreStats } from "./filestore.js";
export { toNetascii } from "./netascii.js";
export {
  BLKSIZE_MAX,
  BLKSIZE_MIN,
  DEFAULT_BLKSIZE,
  maxBlksizeForMtu,
  type NegotiatedOptions,
  negotiateOptions,
} from "./options.js";
export {
  parseTftpPacket,
  parseTftpRequest,
  type TftpMode,
  type TftpPacket,
  type TftpRequest,
  type TftpRequestResult,
} from "./packet.js";
export { normaliseTftpName, resolveTftpPath } from "./resolve.js";
export {
  createTftpServer,
  type TftpServer,
  type TftpServerOptions,
  type TftpServerStats,
  type TftpTransferEvent,
} from "./server.js";
