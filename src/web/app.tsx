import { useEffect, useRef, useState } from "preact/hooks";
import { logout, onSession, resume, type User, user } from "./api.ts";
import { connectLive, disconnectLive, type LiveState, liveState, onLiveState } from "./events.ts";
import { AlertsPage } from "./pages/alerts.tsx";
import { ConfigPage } from "./pages/config.tsx";
import { FleetPage } from "./pages/fleet.tsx";
import { HistoryPage } from "./pages/history.tsx";
import { ImagesPage } from "./pages/images.tsx";
import { JobPage, JobsPage } from "./pages/jobs.tsx";
import { LoginPage } from "./pages/login.tsx";
import { MachinePage } from "./pages/machine.tsx";
import { RoomsPage } from "./pages/rooms.tsx";
import { StoragePage } from "./pages/storage.tsx";
import { UsersPage } from "./pages/users.tsx";
import { href, type Route, useRoute } from "./router.ts";

interface NavItem {
  page: string;
  label: string;
  /** Who sees the link: every page checks again, the API decides in the end. */
  show: (u: User) => boolean;
}

const fleetReaders = (u: User) => u.role !== "client";
const NAV: NavItem[] = [
  { page: "fleet", label: "Fleet", show: () => true },
  { page: "rooms", label: "Rooms", show: fleetReaders },
  { page: "images", label: "Images", show: fleetReaders },
  { page: "jobs", label: "Jobs", show: fleetReaders },
  { page: "alerts", label: "Alerts", show: fleetReaders },
  { page: "history", label: "History", show: fleetReaders },
  { page: "storage", label: "Storage", show: fleetReaders },
  { page: "users", label: "Users", show: (u) => u.role === "admin" },
  { page: "config", label: "Configuration", show: fleetReaders },
];

function Page({ route }: { route: Route }) {
  switch (route.page) {
    case "fleet":
      return <FleetPage />;
    case "machines":
      return route.id ? <MachinePage id={route.id} /> : <FleetPage />;
    case "rooms":
      return <RoomsPage />;
    case "images":
      return <ImagesPage />;
    case "jobs":
      return route.id ? <JobPage id={route.id} /> : <JobsPage />;
    case "alerts":
      return <AlertsPage />;
    case "history":
      return <HistoryPage query={route.query} />;
    case "storage":
      return <StoragePage />;
    case "users":
      return <UsersPage />;
    case "config":
      return <ConfigPage />;
    default:
      return (
        <>
          <h1>Not found</h1>
          <p>
            No page here. <a href={href("fleet")}>Back to the fleet</a>.
          </p>
        </>
      );
  }
}

const LIVE_TEXT: Record<LiveState, string> = {
  live: "Live",
  connecting: "Reconnecting…",
  offline: "Offline",
};

export function App() {
  const [me, setMe] = useState<User | undefined>(user());
  const [starting, setStarting] = useState(true);
  const [live, setLive] = useState<LiveState>(liveState());
  const route = useRoute();
  const main = useRef<HTMLElement>(null);

  useEffect(() => {
    const offSession = onSession((u) => {
      setMe(u);
      if (u) void connectLive();
      else disconnectLive();
    });
    const offLive = onLiveState(setLive);
    resume()
      .catch(() => undefined)
      .finally(() => setStarting(false));
    return () => {
      offSession();
      offLive();
    };
  }, []);

  // A new page (or the first after login) moves focus to its heading, so keyboard and
  // screen-reader users follow.
  useEffect(() => {
    main.current?.querySelector("h1")?.focus();
  }, [route.page, route.id, me?.id]);

  if (starting) return <p class="muted">Loading…</p>;
  if (!me) return <LoginPage />;

  return (
    <>
      <button type="button" class="skip" onClick={skipToMain}>
        Skip to content
      </button>
      <header class="top">
        <span class="brand">bootfleet</span>
        <nav aria-label="Main">
          <ul>
            {NAV.filter((n) => n.show(me)).map((n) => (
              <li key={n.page}>
                <a
                  href={href(n.page)}
                  aria-current={
                    route.page === n.page || (n.page === "fleet" && route.page === "machines")
                      ? "page"
                      : undefined
                  }
                >
                  {n.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <span class={`live live-${live}`} role="status" title="Event stream">
          {LIVE_TEXT[live]}
        </span>
        <span class="who">
          {me.username} <span class="role">({me.role})</span>
        </span>
        <button type="button" class="secondary" onClick={() => void logout()}>
          Log out
        </button>
      </header>
      <main id="main" ref={main} tabIndex={-1}>
        <Page route={route} />
      </main>
    </>
  );
}

/** A button, not a link to #main: the hash is the router's. */
function skipToMain() {
  document.getElementById("main")?.focus();
}
