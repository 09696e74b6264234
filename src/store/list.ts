import type Database from "better-sqlite3";

/** A page request of a list: what the API's list query parses to. */
export interface ListQuery {
  skip: number;
  limit: number;
  search?: string | undefined;
  sort: string;
  order: "asc" | "desc";
}

/** One page of a list and the number of rows all pages hold. */
export interface ListPage<Row> {
  rows: Row[];
  total: number;
}

export interface ListSpec {
  /** Column list: "m.*, u.username AS owner_username". */
  select: string;
  /** Table and joins: "machines m LEFT JOIN users u ON u.id = m.owner_user_id". */
  from: string;
  /** Conditions ANDed together; falsy entries (filters not given) are skipped. */
  where?: readonly (string | false | undefined | null | 0 | "")[];
  /** Named parameters of the conditions (@name). */
  params?: Record<string, unknown>;
  /** Columns `search` looks in (case-insensitive substring). */
  search?: readonly string[];
  /** Sort field → SQL expression. Only these can be sorted on. */
  sort: Record<string, string>;
  /** Tie-breaker, so that pages are stable when the sort key repeats. */
  tiebreak?: string;
}

/**
 * Runs a list in SQL: count and page in the database, so a list of thousands of
 * machines never comes into memory. Every fragment comes from the repository's own spec;
 * values from the caller are bound parameters. `prepare` is the repository's statement
 * cache: a list's SQL text depends only on which filters are given and the sort, so the
 * few texts a list can have are each prepared once.
 */
export function runList<Row>(
  prepare: (sql: string) => Database.Statement,
  spec: ListSpec,
  q: ListQuery,
): ListPage<Row> {
  const where = (spec.where ?? []).filter((w): w is string => typeof w === "string" && w !== "");
  const params: Record<string, unknown> = { ...(spec.params ?? {}) };
  if (q.search && spec.search?.length) {
    params.__search = `%${q.search.replace(/[\\%_]/g, (m) => `\\${m}`)}%`;
    where.push(`(${spec.search.map((col) => `${col} LIKE @__search ESCAPE '\\'`).join(" OR ")})`);
  }
  const whereSql = where.length ? `WHERE ${where.map((w) => `(${w})`).join(" AND ")}` : "";
  const total = (
    prepare(`SELECT count(*) AS n FROM ${spec.from} ${whereSql}`).get(params) as { n: number }
  ).n;
  const sortExpr = spec.sort[q.sort];
  if (!sortExpr) throw new Error(`list: sort field ${q.sort} has no column`);
  const dir = q.order === "desc" ? "DESC" : "ASC";
  const tiebreak = spec.tiebreak ? `, ${spec.tiebreak} ${dir}` : "";
  const rows = prepare(
    `SELECT ${spec.select} FROM ${spec.from} ${whereSql} ORDER BY ${sortExpr} ${dir}${tiebreak} LIMIT @__limit OFFSET @__skip`,
  ).all({ ...params, __limit: q.limit, __skip: q.skip }) as Row[];
  return { rows, total };
}

/** The sort map of a list whose sort fields are columns of one table alias: `name` → `m.name`. */
export function sortColumns(alias: string, fields: readonly string[]): Record<string, string> {
  return Object.fromEntries(fields.map((k) => [k, `${alias}.${k}`]));
}
