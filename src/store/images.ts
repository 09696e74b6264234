import type { Db } from "./db.js";
import { type ListPage, type ListQuery, sortColumns } from "./list.js";
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
  created_by: number | null;
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

/** An image as listed: with the name of the user who uploaded it. */
export type ImageRow = Image & { created_by_username: string | null };

export const IMAGE_SORTS = [
  "id",
  "name",
  "created_at",
  "updated_at",
  "size_bytes",
  "virtual_size_bytes",
  "status",
  "image_type",
  "format",
] as const;

export interface ImageFilter {
  image_type?: ImageType | undefined;
  status?: ImageStatus | undefined;
}

const ROW_SELECT = "i.*, u.username AS created_by_username";
const ROW_FROM = "images i LEFT JOIN users u ON u.id = i.created_by";

export class ImagesRepo extends Table<Image> {
  constructor(db: Db, clock: () => number = Date.now) {
    super(db, "images", WRITABLE, clock);
  }

  getRow(id: number): ImageRow | undefined {
    return this.stmt(`SELECT ${ROW_SELECT} FROM ${ROW_FROM} WHERE i.id = ?`).get(id) as
      | ImageRow
      | undefined;
  }

  listRows(q: ListQuery, f: ImageFilter = {}): ListPage<ImageRow> {
    return this.page<ImageRow>(
      {
        select: ROW_SELECT,
        from: ROW_FROM,
        where: [f.image_type && "i.image_type = @type", f.status && "i.status = @status"],
        params: { type: f.image_type, status: f.status },
        search: ["i.name", "i.description", "i.filename"],
        sort: sortColumns("i", IMAGE_SORTS),
        tiebreak: "i.id",
      },
      q,
    );
  }

  /** Whether another image has this name (names are unique without regard to case). */
  nameTaken(name: string, exceptId?: number): boolean {
    return exceptId === undefined
      ? this.count("name = @n", { n: name }) > 0
      : this.count("name = @n AND id != @id", { n: name, id: exceptId }) > 0;
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
          `INSERT INTO image_versions (image_id, version, path, size_bytes, checksum_sha256, note, created_by)
           VALUES (@image_id, @version, @path, @size_bytes, @checksum_sha256, @note, @created_by)`,
        )
        .run({
          image_id: imageId,
          version: next,
          path: v.path,
          size_bytes: v.size_bytes ?? 0,
          checksum_sha256: v.checksum_sha256 ?? null,
          note: v.note ?? "",
          created_by: v.created_by ?? null,
        });
      this.update(imageId, { current_version: next });
      return this.db
        .prepare("SELECT * FROM image_versions WHERE id = ?")
        .get(info.lastInsertRowid) as ImageVersion;
    })();
  }

  /** Images still being uploaded or imported, for the recovery at start. */
  unfinished(): Image[] {
    return this.stmt(
      "SELECT * FROM images WHERE status IN ('uploading','processing') ORDER BY id",
    ).all() as Image[];
  }

  /** Each ready image's current version file (what new overlays are made from). */
  currentFiles(): { image_id: number; version: number; path: string }[] {
    return this.stmt(
      `SELECT v.image_id, v.version, v.path FROM images i
       JOIN image_versions v ON v.image_id = i.id AND v.version = i.current_version
       WHERE i.status = 'ready' ORDER BY i.id`,
    ).all() as { image_id: number; version: number; path: string }[];
  }

  /** The file of every version of every image. */
  versionPaths(): string[] {
    return (this.stmt("SELECT path FROM image_versions").all() as { path: string }[]).map(
      (r) => r.path,
    );
  }

  /** The file of the current version of every ready image (what boots; what warming reads). */
  currentVersionPaths(): string[] {
    return (
      this.stmt(
        "SELECT v.path FROM images i JOIN image_versions v ON v.image_id = i.id AND v.version = i.current_version WHERE i.status = 'ready' ORDER BY i.id",
      ).all() as { path: string }[]
    ).map((r) => r.path);
  }

  versions(imageId: number): ImageVersion[] {
    // Read at every sanboot (which version a machine boots): prepared once.
    return this.stmt("SELECT * FROM image_versions WHERE image_id = ? ORDER BY version").all(
      imageId,
    ) as ImageVersion[];
  }
}
