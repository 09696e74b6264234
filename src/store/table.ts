import type Database from "better-sqlite3";
import type { Db } from "./db.js";
import { type ListPage, type ListQuery, type ListSpec, runList } from "./list.js";
import { nowIso, setClause } from "./util.js";

/**
 * The plain row operations every repository shares: get by id, insert, patch, delete,
 * count. Column names come only from the repository's allow-list, never from a caller.
 */
export class Table<Row extends { id: number }> {
  private readonly statements = new Map<string, Database.Statement>();

  constructor(
    protected readonly db: Db,
    readonly name: string,
    private readonly writable: readonly (keyof Row & string)[],
    protected readonly clock: () => number = Date.now,
    /** Whether the table has created_at/updated_at columns to stamp. */
    private readonly stamped = true,
  ) {}

  /**
   * Run before each of this repository's statements: writes queued to be made later
   * whose rows this repository reads (the proxy-DHCP's offers, store/pending-offers.ts),
   * so that no reader sees the store without them. Unset for most repositories.
   */
  protected pendingWrites: (() => void) | undefined;

  /** A statement of this repository, after any pending write its rows depend on. */
  protected stmt(sql: string): Database.Statement {
    this.pendingWrites?.();
    return this.prepared(sql);
  }

  /**
   * fn in one transaction of this repository, after any pending write: inside a
   * transaction the pending writes are not made (its rollback would take them with it), so
   * they are made before it begins, and what fn reads includes them.
   */
  protected transaction<T>(fn: () => T): T {
    this.pendingWrites?.();
    return this.db.transaction(fn)();
  }

  /**
   * A prepared statement, made once per SQL text: preparing costs more than running a
   * simple query, and the boot path looks machines up on every DHCP packet. Without the
   * pending writes: for a statement that reads nothing they write.
   */
  protected prepared(sql: string): Database.Statement {
    let s = this.statements.get(sql);
    if (!s) {
      s = this.db.prepare(sql);
      this.statements.set(sql, s);
    }
    return s;
  }

  /** A page of a list read model, its statements cached with the repository's others. */
  protected page<R>(spec: ListSpec, q: ListQuery): ListPage<R> {
    return runList<R>((sql) => this.stmt(sql), spec, q);
  }

  get(id: number): Row | undefined {
    return this.stmt(`SELECT * FROM ${this.name} WHERE id = ?`).get(id) as Row | undefined;
  }

  insert(values: Partial<Row>): Row {
    const { params } = setClause(values, this.writable);
    const cols = Object.keys(params);
    const now = nowIso(this.clock);
    const allCols = this.stamped ? [...cols, "created_at", "updated_at"] : cols;
    const allVals = this.stamped
      ? [...cols.map((c) => `@${c}`), "@__now", "@__now"]
      : cols.map((c) => `@${c}`);
    const sql = allCols.length
      ? `INSERT INTO ${this.name} (${allCols.join(", ")}) VALUES (${allVals.join(", ")})`
      : `INSERT INTO ${this.name} DEFAULT VALUES`;
    const info = this.stmt(sql).run(this.stamped ? { ...params, __now: now } : params);
    return this.get(Number(info.lastInsertRowid))!;
  }

  update(id: number, patch: Partial<Row>): Row | undefined {
    const { sql, params } = setClause(patch, this.writable);
    if (sql) {
      const stamp = this.stamped ? ", updated_at = @__now" : "";
      // Cached per SQL text like the others: one per set of columns a caller changes (a
      // handful per table), and boots update rows on every request.
      this.stmt(`UPDATE ${this.name} SET ${sql}${stamp} WHERE id = @__id`).run({
        ...params,
        __now: nowIso(this.clock),
        __id: id,
      });
    }
    return this.get(id);
  }

  delete(id: number): boolean {
    return this.stmt(`DELETE FROM ${this.name} WHERE id = ?`).run(id).changes > 0;
  }

  count(where = "1 = 1", params: Record<string, unknown> = {}): number {
    return (
      this.stmt(`SELECT count(*) AS n FROM ${this.name} WHERE ${where}`).get(params) as {
        n: number;
      }
    ).n;
  }
}
