import type { Context } from "hono";
import * as z from "zod";

export type { ListQuery } from "../store/list.js";

import type { ListQuery } from "../store/list.js";
import type { CachedPage } from "./list-cache.js";

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

/**
 * A page whose JSON was built already (list-cache.ts): the same answer sendList's rows
 * give, sent as the kept bytes.
 */
export function sendPage(c: Context, page: CachedPage, q: Pick<ListQuery, "limit">): Response {
  return c.body(page.body, 200, {
    "Content-Type": "application/json",
    "X-Total-Count": String(page.total),
    "X-Page-Count": String(Math.ceil(page.total / q.limit)),
  });
}
