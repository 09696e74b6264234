// The command line of a bench/*/run.ts: `--name value` options and bare `--flag`s. Every
// benchmark reads its own flags the same way, so the parsing lives here once.

export interface BenchArgs {
  /** The raw arguments after the script (for the few benches that look at them directly). */
  readonly argv: readonly string[];
  /** The value after `--name`, or `dflt` when the option (or its value) is missing. */
  str(name: string, dflt: string): string;
  /** `--name N` as a positive integer; a clear error names the option when it is not one. */
  positiveInt(name: string, dflt: number): number;
  /** Whether the bare flag `--name` was given. */
  has(name: string): boolean;
}

export function benchArgs(argv: readonly string[] = process.argv.slice(2)): BenchArgs {
  const at = (name: string) => argv.indexOf(`--${name}`);
  return {
    argv,
    str(name, dflt) {
      const i = at(name);
      return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : dflt;
    },
    positiveInt(name, dflt) {
      const i = at(name);
      const v = i >= 0 ? Number(argv[i + 1]) : dflt;
      if (!Number.isInteger(v) || v < 1) throw new Error(`--${name} wants a positive integer`);
      return v;
    },
    has(name) {
      return argv.includes(`--${name}`);
    },
  };
}
