/**
 * Why the image library refused a request. The room knows nothing of HTTP: the API's
 * images route maps each code onto a status and the contract's error body.
 */
export type ImageErrorCode =
  /** The upload's form is not what the library takes (`details.field` names the part). */
  | "invalid_upload"
  /** Another image has the name (`details.field` is "name"). */
  | "name_taken"
  | "not_found"
  /** A target uses the image (`details.targets`) or a job imports it (`details.job_id`). */
  | "in_use"
  /** The file is over the upload limit (`details.max_bytes`). */
  | "too_large"
  /** The image folder's file system is full. */
  | "storage_full"
  /** The client went away (or the stream broke) before the upload completed. */
  | "upload_aborted";

export class ImageError extends Error {
  override name = "ImageError";
  constructor(
    readonly code: ImageErrorCode,
    message: string,
    /** Facts a caller may show: the field at fault, the limit, what holds the image. */
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
  }
}

/** Thrown when the client went away (or the stream broke) before the upload completed. */
export class UploadAborted extends ImageError {
  override name = "UploadAborted";
  constructor(message: string) {
    super("upload_aborted", message);
  }
}
