import type { Db } from "./db.js";
import { Table } from "./table.js";

export type ImageStatus = "uploading" | "processing" | "ready" | "error";
export type ImageType = "system" | "game" | "data" | "template";
export type ImageFormat = "raw" | "qcow2" | "vhd" | "vhdx" | "vmdk" | "vdi" | "unknown";

export interface Image {
  id: number;
  name: string;
  description: string;
  filename: string;
  format: ImageFormat;
  size_bytes: number;
  virtual_size_bytes: number;
  status: ImageStatus;
  status_reason: string | null;
  image_type: ImageType;
  checksum_md5: string | null;
  checksum_sha256: string | null;
  current_version: number | null;
  created_by: number | null;
  created_at: string;
  updated_at: string;
}

export interface ImageVersion {
  id: number;
  image_id: number;
  version: number;
  path: string;
  size_bytes: number;
  checksum_sha256: string | null;
  note: string;
  created_at: string;
}

const WRITABLE = [
  "name",
  "description",
  "filename",
  "format",
  "size_bytes",
  "virtual_size_bytes",
  "status",
  "status_reason",
  "image_type",
  "checksum_md5",
  "checksum_sha256",
  "current_version",
  "created_by",
] as const satisfies readonly (keyof Image)[];

export class ImagesRepo extends Table<Image> {
  constructor(db: Db, clock: () => number = Date.now) {
    super(db, "images", WRITABLE, clock);
  }

  create(i: Pick<Image, "name" | "filename"> & Partial<Image>): Image {
    return this.insert(i);
  }

  /**
   * Adds the next version of an image and makes it current, in one transaction, so a
   * reader never sees a current_version without its row.
   */
  addVersion(imageId: number, v: Pick<ImageVersion, "path"> & Partial<ImageVersion>): ImageVersion {
    return this.db.transaction(() => {
      const next = (
        this.db
          .prepare(
            "SELECT coalesce(max(version), 0) + 1 AS n FROM image_versions WHERE image_id = ?",
          )
          .get(imageId) as { n: number }
      ).n;
      const info = this.db
        .prepare(
          `INSERT INTO image_versions (image_id, version, path, size_bytes, checksum_sha256, note)
           VALUES (@image_id, @version, @path, @size_bytes, @checksum_sha256, @note)`,
        )
        .run({
          image_id: imageId,
          version: next,
          path: v.path,
          size_bytes: v.size_bytes ?? 0,
          checksum_sha256: v.checksum_sha256 ?? null,
          note: v.note ?? "",
        });
      this.update(imageId, { current_version: next });
      return this.db
        .prepare("SELECT * FROM image_versions WHERE id = ?")
        .get(info.lastInsertRowid) as ImageVersion;
    })();
  }

  versions(imageId: number): ImageVersion[] {
    return this.db
      .prepare("SELECT * FROM image_versions WHERE image_id = ? ORDER BY version")
      .all(imageId) as ImageVersion[];
  }
}
