export {
  checkImage,
  convertToRaw,
  type ImageInfo,
  ImageRejected,
  parseConvertProgress,
  probeImage,
  type QemuImgOptions,
} from "./qemu-img.js";
export {
  IMAGE_IMPORT_JOB,
  IMAGE_IMPORT_STEPS,
  IMAGE_TYPES,
  type ImageImportParams,
  type ImagePatch,
  ImageService,
  type ImageServiceDeps,
  imagePatchSchema,
  type UploadRequest,
} from "./service.js";
export {
  type ReceivedUpload,
  type ReceiveUploadOptions,
  receiveUpload,
  safeDisplayName,
  UPLOAD_TEMP_PREFIX,
  UPLOAD_TEMP_SUFFIX,
  UploadAborted,
} from "./upload.js";
