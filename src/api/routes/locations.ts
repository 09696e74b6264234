import * as z from "zod";
import { LOCATION_SORTS, type LocationRow } from "../../store/locations.js";
import { conflictOnUnique, notFound } from "../conflict.js";
import { ApiError } from "../errors.js";
import {
  defineRoute,
  idParams,
  listQuery,
  OPERATORS,
  READERS,
  type RouteModule,
  sendList,
  zName,
  zText,
} from "../route.js";
import { zMenuTimeout } from "../validate.js";

const locationView = (l: LocationRow) => ({
  id: l.id,
  name: l.name,
  description: l.description,
  machine_count: l.machine_count,
  // The boot menus of its machines that set none themselves (null: not set here).
  menu_timeout_seconds: l.menu_timeout_seconds,
  menu_local_disk: l.menu_local_disk === null ? null : l.menu_local_disk === 1,
  created_at: l.created_at,
  updated_at: l.updated_at,
});

const menuFields = {
  menu_timeout_seconds: zMenuTimeout.nullable().optional(),
  menu_local_disk: z.boolean().nullable().optional(),
};
const createBody = z
  .object({ name: zName(128), description: zText(1000).optional(), ...menuFields })
  .strict();
const updateBody = z
  .object({ name: zName(128).optional(), description: zText(1000).optional(), ...menuFields })
  .strict();

/** The store keeps the local-disk flag as 0/1. */
function toRow<B extends { menu_local_disk?: boolean | null | undefined }>(b: B) {
  const { menu_local_disk, ...rest } = b;
  return {
    ...rest,
    ...(menu_local_disk === undefined
      ? {}
      : { menu_local_disk: menu_local_disk === null ? null : menu_local_disk ? 1 : 0 }),
  };
}
const taken = () => "a location with this name exists";

/**
 * /api/locations: rooms. A machine is in one room or none (machines.location_id).
 * Deleting a room that still has machines is refused with 409 naming how many: moving
 * PCs out of a room is a decision, not a side effect of a delete.
 */
export const locationsRoutes: RouteModule = (deps) => {
  const { store } = deps;
  const row = (id: number) => store.locations.getRow(id) ?? raise(notFound("location", id));
  return [
    defineRoute({
      method: "GET",
      path: "/locations",
      tag: "locations",
      summary: "List locations (rooms) with their machine counts",
      roles: READERS,
      query: listQuery({ sort: LOCATION_SORTS }, {}),
      handler: ({ c, query }) => {
        const { rows, total } = store.locations.listRows(query);
        return sendList(c, rows.map(locationView), total, query);
      },
    }),
    defineRoute({
      method: "POST",
      path: "/locations",
      tag: "locations",
      summary: "Create a location",
      roles: OPERATORS,
      resource: "location",
      status: 201,
      body: createBody,
      handler: ({ body, audit }) => {
        const l = conflictOnUnique(() => store.locations.create(toRow(body)), taken);
        audit({ resource_id: l.id });
        return locationView(row(l.id));
      },
    }),
    defineRoute({
      method: "GET",
      path: "/locations/:id",
      tag: "locations",
      summary: "Get a location",
      roles: READERS,
      params: idParams,
      handler: ({ params }) => locationView(row(params.id)),
    }),
    defineRoute({
      method: "PUT",
      path: "/locations/:id",
      tag: "locations",
      summary: "Rename or describe a location, or set its machines' boot menu habits",
      roles: OPERATORS,
      resource: "location",
      params: idParams,
      body: updateBody,
      handler: ({ params, body }) => {
        row(params.id);
        conflictOnUnique(() => store.locations.update(params.id, toRow(body)), taken);
        return locationView(row(params.id));
      },
    }),
    defineRoute({
      method: "DELETE",
      path: "/locations/:id",
      tag: "locations",
      summary: "Delete an empty location (409 while machines are in it)",
      roles: OPERATORS,
      resource: "location",
      params: idParams,
      handler: ({ params }) => {
        const l = row(params.id);
        const inUse = (n: number) =>
          new ApiError(
            409,
            "conflict_error",
            `location ${l.name} still has ${n} machine(s): move them (PUT /api/machines/{id} with location_id) first`,
            { machine_count: n },
          );
        if (l.machine_count > 0) throw inUse(l.machine_count);
        try {
          store.locations.delete(l.id);
        } catch (err) {
          // A machine moved in since the count: the foreign key refuses the delete.
          if ((err as { code?: string }).code === "SQLITE_CONSTRAINT_FOREIGNKEY") {
            throw inUse(store.locations.getRow(l.id)?.machine_count ?? 1);
          }
          throw err;
        }
        return { message: "location deleted", id: l.id };
      },
    }),
  ];
};

function raise(err: Error): never {
  throw err;
}
