import * as z from "zod";
import type { DerivedState } from "../../fleet/state.js";
import {
  MACHINE_SORTS,
  type Machine,
  type MachineRow,
  type MachineViewRow,
} from "../../store/machines.js";
import { conflictOnUnique, notFound, uniqueColumn } from "../conflict.js";
import { ApiError } from "../errors.js";
import { sendPage } from "../list.js";
import { ListCache } from "../list-cache.js";
import {
  ANY_USER,
  type ApiDeps,
  type AuthUser,
  defineRoute,
  idParams,
  listQuery,
  OPERATORS,
  type RouteModule,
} from "../route.js";
import { zHostname, zIPv4, zLabel, zMac, zMenuTimeout, zName, zText } from "../validate.js";
import { machineState, machineStatesNow } from "./fleet-state.js";

/** A machine document with a full custom script (64 Ki characters, escaped for JSON). */
const MACHINE_BODY_MAX_BYTES = 512 * 1024;

const MACHINE_STATUSES = [
  "discovered",
  "active",
  "inactive",
  "maintenance",
  "retired",
  "error",
] as const;
const BOOT_ACTIONS = ["sanboot", "menu", "local", "kernel", "custom", "disabled"] as const;
/** The API speaks "reset-on-reboot"; the store keeps "reset". "reset" is accepted too. */
const overlayPolicy = z
  .enum(["reset-on-reboot", "reset", "persistent"])
  .transform((v) => (v === "persistent" ? "persistent" : "reset") as Machine["overlay_policy"]);

/**
 * What the API shows of a machine. The BMC user name and password are write-only: only
 * whether they are set is shown.
 */
export function machineView(m: MachineViewRow, live: DerivedState) {
  return {
    id: m.id,
    name: m.name,
    description: m.description,
    mac_address: m.mac_address,
    ip_address: m.ip_address,
    hostname: m.hostname,
    boot_mode: m.boot_mode,
    secure_boot_enabled: m.secure_boot_enabled === 1,
    status: m.status,
    status_reason: m.status_reason,
    is_online: m.is_online === 1,
    location: m.location,
    room: m.room,
    asset_tag: m.asset_tag,
    boot_action: m.boot_action,
    boot_image_id: m.boot_image_id,
    overlay_policy: m.overlay_policy === "reset" ? "reset-on-reboot" : "persistent",
    owner_user_id: m.owner_user_id,
    client_arch: m.client_arch,
    client_uuid: m.client_uuid,
    vendor_class: m.vendor_class,
    bmc_address: m.bmc_address,
    bmc_credentials_set: m.bmc_credentials_set === 1,
    created_at: m.created_at,
    updated_at: m.updated_at,
    first_seen: m.first_seen,
    last_seen: m.last_seen,
    last_boot: m.last_boot,
    boot_count: m.boot_count,
    location_id: m.location_id,
    // Its boot menu (several targets): null means "as its room says, else the global".
    default_target_id: m.default_target_id,
    menu_timeout_seconds: m.menu_timeout_seconds,
    menu_local_disk: m.menu_local_disk === null ? null : m.menu_local_disk === 1,
    /** The live state (src/fleet/state.ts) and where it comes from. */
    state: live.state,
    state_detail: {
      phase: live.phase,
      since: live.since,
      reason: live.reason,
      likely_causes: live.likely_causes,
    },
  };
}

const fields = {
  name: zName(64),
  description: zText(1000),
  mac_address: zMac,
  ip_address: zIPv4.nullable(),
  hostname: zHostname.nullable(),
  boot_mode: z.enum(["bios", "uefi"]),
  secure_boot_enabled: z.boolean(),
  status: z.enum(MACHINE_STATUSES),
  status_reason: zLabel(500).nullable(),
  location: zLabel(128),
  room: zLabel(128),
  asset_tag: zLabel(64),
  boot_action: z.enum(BOOT_ACTIONS),
  boot_image_id: z.number().int().positive().nullable(),
  custom_script: zText(65536).nullable(),
  overlay_policy: overlayPolicy,
  owner_user_id: z.number().int().positive().nullable(),
  location_id: z.number().int().positive().nullable(),
  bmc_address: z.union([zIPv4, zHostname]).nullable(),
  bmc_username: zName(64).nullable(),
  bmc_password: zName(128).nullable(),
  default_target_id: z.number().int().positive().nullable(),
  menu_timeout_seconds: zMenuTimeout.nullable(),
  menu_local_disk: z.boolean().nullable(),
};

const updateBody = z
  .object(
    Object.fromEntries(Object.entries(fields).map(([k, v]) => [k, v.optional()])) as {
      [K in keyof typeof fields]: z.ZodOptional<(typeof fields)[K]>;
    },
  )
  .strict();

const createBody = updateBody
  .extend({ name: fields.name, mac_address: fields.mac_address })
  .strict();

/** Machines visible to a caller: all of them, or for a client only the ones it owns. */
export function visibleMachine(deps: ApiDeps, user: AuthUser, id: number): MachineRow {
  return visibleOr404(deps.store.machines.getRow(id), user, id);
}

function visibleOr404<R extends { owner_user_id: number | null }>(
  row: R | undefined,
  user: AuthUser,
  id: number,
): R {
  if (!row || (user.role === "client" && row.owner_user_id !== user.id)) {
    throw notFound("machine", id);
  }
  return row;
}

function checkReferences(
  deps: ApiDeps,
  b: {
    boot_image_id?: number | null;
    owner_user_id?: number | null;
    location_id?: number | null;
    default_target_id?: number | null;
  },
  machineId?: number,
) {
  if (
    b.default_target_id != null &&
    deps.store.targets.get(b.default_target_id)?.machine_id !== machineId
  ) {
    throw new ApiError(422, "validation_error", "default_target_id: not a target of this machine", {
      field: "default_target_id",
    });
  }
  if (b.location_id != null && !deps.store.locations.get(b.location_id)) {
    throw new ApiError(422, "validation_error", "location_id: no such location", {
      field: "location_id",
    });
  }
  if (b.boot_image_id != null && !deps.store.images.get(b.boot_image_id)) {
    throw new ApiError(422, "validation_error", "boot_image_id: no such image", {
      field: "boot_image_id",
    });
  }
  if (b.owner_user_id != null && !deps.store.users.get(b.owner_user_id)) {
    throw new ApiError(422, "validation_error", "owner_user_id: no such user", {
      field: "owner_user_id",
    });
  }
}

const conflictDetail = (err: Error) =>
  uniqueColumn(err) === "mac_address"
    ? "a machine with this MAC address exists"
    : "a machine with this name exists";

function toRow(b: Partial<z.output<typeof updateBody>>): Partial<Machine> {
  const { secure_boot_enabled, menu_local_disk, ...rest } = b;
  return {
    ...rest,
    ...(secure_boot_enabled === undefined
      ? {}
      : { secure_boot_enabled: secure_boot_enabled ? 1 : 0 }),
    ...(menu_local_disk === undefined
      ? {}
      : { menu_local_disk: menu_local_disk === null ? null : menu_local_disk ? 1 : 0 }),
  } as Partial<Machine>;
}

/** /api/machines: CRUD over the store; clients see only the machines assigned to them. */
export const machinesRoutes: RouteModule = (deps) => {
  const { store } = deps;
  const getRow = (id: number) => store.machines.getViewRow(id)!;
  const view = (m: MachineViewRow) => machineView(m, machineState(deps, m.id));
  const listCache = new ListCache();
  return [
    defineRoute({
      method: "GET",
      path: "/machines",
      tag: "machines",
      summary: "List machines (a client sees only its own)",
      roles: ANY_USER,
      query: listQuery(
        {
          sort: MACHINE_SORTS,
        },
        {
          status: z.enum(MACHINE_STATUSES).optional(),
          location: z.string().max(128).optional(),
          room: z.string().max(128).optional(),
          owner_user_id: z.coerce.number().int().positive().optional(),
          /** A room's id, or "none" for the machines in no room. */
          location_id: z.union([z.literal("none"), z.coerce.number().int().positive()]).optional(),
        },
      ),
      handler: ({ c, query, user }) => {
        const visibleTo = user!.role === "client" ? user!.id : undefined;
        // Every role but client sees the same list; the parsed query leaves out what the
        // schema ignores (cache busters), so equal lists share one entry.
        const key = `${visibleTo ?? "fleet"} ${JSON.stringify(query)}`;
        const generation = store.generation();
        let page = listCache.get(key, generation);
        if (!page) {
          const { rows, total } = store.machines.listRows(query, {
            status: query.status,
            location: query.location,
            room: query.room,
            owner_user_id: query.owner_user_id,
            location_id: query.location_id === "none" ? null : query.location_id,
            visibleTo,
          });
          const live = machineStatesNow(
            deps,
            rows.map((m) => m.id),
          );
          const items = rows.map((m) => machineView(m, live.states.get(m.id)!));
          page = { body: Buffer.from(JSON.stringify(items)), total };
          listCache.set(key, generation, page, live.stillHold);
        }
        return sendPage(c, page, query);
      },
    }),
    defineRoute({
      method: "POST",
      path: "/machines",
      tag: "machines",
      summary: "Create a machine (MAC normalised to lowercase colon form)",
      roles: OPERATORS,
      resource: "machine",
      status: 201,
      body: createBody,
      // custom_script may hold 64 Ki characters, JSON-escaped.
      maxBodyBytes: MACHINE_BODY_MAX_BYTES,
      handler: ({ body }) => {
        checkReferences(deps, body);
        const m = conflictOnUnique(
          () => store.machines.create(toRow(body) as Machine),
          conflictDetail,
        );
        return view(getRow(m.id));
      },
    }),
    defineRoute({
      method: "GET",
      path: "/machines/:id",
      tag: "machines",
      summary: "Get a machine",
      roles: ANY_USER,
      params: idParams,
      handler: ({ params, user }) =>
        view(visibleOr404(store.machines.getViewRow(params.id), user!, params.id)),
    }),
    defineRoute({
      method: "PUT",
      path: "/machines/:id",
      tag: "machines",
      summary: "Update a machine (any subset of its fields)",
      roles: OPERATORS,
      resource: "machine",
      params: idParams,
      body: updateBody,
      // custom_script may hold 64 Ki characters, JSON-escaped.
      maxBodyBytes: MACHINE_BODY_MAX_BYTES,
      handler: ({ params, body }) => {
        if (!store.machines.get(params.id)) throw notFound("machine", params.id);
        checkReferences(deps, body, params.id);
        conflictOnUnique(() => store.machines.update(params.id, toRow(body)), conflictDetail);
        return view(getRow(params.id));
      },
    }),
    defineRoute({
      method: "DELETE",
      path: "/machines/:id",
      tag: "machines",
      summary: "Delete a machine (and its targets and sessions)",
      roles: OPERATORS,
      resource: "machine",
      params: idParams,
      handler: ({ params }) => {
        const hadTargets = store.targets.forMachine(params.id).length > 0;
        if (!store.machines.delete(params.id)) throw notFound("machine", params.id);
        if (hadTargets) deps.onTargetChanged(params.id);
        return { message: "machine deleted", id: params.id };
      },
    }),
  ];
};
