import type { Context } from "hono";
import { z } from "zod";
import type { Db } from "../store/db.js";

export const MAX_LIMIT = 1000;
export const DEFAULT_LIMIT = 100;

/**
 * The query schema every list shares (skip, limit, search, sort, order) plus the
 * list's own filters. Query strings are strings, so numbers are coerced; an unknown sort
 * field, a negative skip or a limit over 1000 fail validation naming the parameter.
 * Unknown parameters are ignored (browsers and proxies add cache busters).
 */
export function listQuery<S extends z.ZodRawShape>(
  opts: {
    sort: readonly [string, ...string[]];
    defaultSort?: string;
    defaultOrder?: "asc" | "desc";
  },
  filters: S = {} as S,
) {
  return z.object({
    skip: z.coerce.number().int().min(0).default(0),
    limit: z.coerce.number().int().min(1).max(MAX_LIMIT).default(DEFAULT_LIMIT),
    search: z.string().max(200).optional(),
    sort: z.enum(opts.sort).default((opts.defaultSort ?? opts.sort[0]) as never),
    order: z.enum(["asc", "desc"]).default(opts.defaultOrder ?? "asc"),
    ...filters,
  });
}

export interface ListQuery {
  skip: number;
  limit: number;
  search?: string | undefined;
  sort: string;
  order: "asc" | "desc";
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
  /** API sort field → SQL expression. Only these can be sorted on. */
  sort: Record<string, string>;
  /** Tie-breaker, so that pages are stable when the sort key repeats. */
  tiebreak?: string;
}

/**
 * Runs a list in SQL: count and page in the database, so a list of thousands of
 * machines never comes into memory. Every fragment comes from the route's own spec;
 * values from the caller are bound parameters.
 */
export function runList<Row>(db: Db, spec: ListSpec, q: ListQuery): { rows: Row[]; total: number } {
  const where = (spec.where ?? []).filter((w): w is string => typeof w === "string" && w !== "");
  const params: Record<string, unknown> = { ...(spec.params ?? {}) };
  if (q.search && spec.search?.length) {
    params.__search = `%${q.search.replace(/[\\%_]/g, (m) => `\\${m}`)}%`;
    where.push(`(${spec.search.map((col) => `${col} LIKE @__search ESCAPE '\\'`).join(" OR ")})`);
  }
  const whereSql = where.length ? `WHERE ${where.map((w) => `(${w})`).join(" AND ")}` : "";
  const total = (
    db.prepare(`SELECT count(*) AS n FROM ${spec.from} ${whereSql}`).get(params) as { n: number }
  ).n;
  const sortExpr = spec.sort[q.sort];
  if (!sortExpr) throw new Error(`list: sort field ${q.sort} has no column`);
  const dir = q.order === "desc" ? "DESC" : "ASC";
  const tiebreak = spec.tiebreak ? `, ${spec.tiebreak} ${dir}` : "";
  const rows = db
    .prepare(
      `SELECT ${spec.select} FROM ${spec.from} ${whereSql} ORDER BY ${sortExpr} ${dir}${tiebreak} LIMIT @__limit OFFSET @__skip`,
    )
    .all({ ...params, __limit: q.limit, __skip: q.skip }) as Row[];
  return { rows, total };
}

/** Sets X-Total-Count and X-Page-Count and hands the rows back for the JSON answer. */
export function sendList<T>(
  c: Context,
  rows: T[],
  total: number,
  q: Pick<ListQuery, "limit">,
): T[] {
  c.header("X-Total-Count", String(total));
  c.header("X-Page-Count", String(Math.ceil(total / q.limit)));
  return rows;
}

/** The sort map of a list whose sort fields are columns of one table alias: `name` → `m.name`. */
export function sortColumns(alias: string, fields: readonly string[]): Record<string, string> {
  return Object.fromEntries(fields.map((k) => [k, `${alias}.${k}`]));
}
