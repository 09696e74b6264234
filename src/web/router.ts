import { useEffect, useState } from "preact/hooks";

/**
 * Hash routes (#/machines/3): the daemon serves one page at `/`, so no server route has
 * to know the dashboard's paths, and /api stays the only other namespace.
 */
export interface Route {
  page: string;
  id: number | undefined;
  query: URLSearchParams;
}

export function parseRoute(hash: string): Route {
  const [path = "", q = ""] = hash.replace(/^#\/?/, "").split("?");
  const [page = "", id] = path.split("/");
  const n = Number(id);
  return {
    page: page || "fleet",
    id: Number.isInteger(n) && n > 0 ? n : undefined,
    query: new URLSearchParams(q),
  };
}

export function useRoute(): Route {
  const [route, setRoute] = useState(() => parseRoute(location.hash));
  useEffect(() => {
    const on = () => setRoute(parseRoute(location.hash));
    window.addEventListener("hashchange", on);
    return () => window.removeEventListener("hashchange", on);
  }, []);
  return route;
}

export function href(page: string, id?: number): string {
  return `#/${page}${id === undefined ? "" : `/${id}`}`;
}
