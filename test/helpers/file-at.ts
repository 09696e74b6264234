import { closeSync, openSync, readSync, writeSync } from "node:fs";

/** The bytes at an offset of a file (a disk image, an overlay), as latin1 text. */
export function readAt(path: string, offset: number, length: number): string {
  const fd = openSync(path, "r");
  try {
    const b = Buffer.alloc(length);
    readSync(fd, b, 0, length, offset);
    return b.toString("latin1");
  } finally {
    closeSync(fd);
  }
}

/** Writes text at an offset of a file, in place (the file keeps its size if it was longer). */
export function writeAt(path: string, offset: number, text: string): void {
  const fd = openSync(path, "r+");
  try {
    writeSync(fd, Buffer.from(text), 0, text.length, offset);
  } finally {
    closeSync(fd);
  }
}
