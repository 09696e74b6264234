// The DHCP codec, client classification and proxy decision, for the transport and the daemon.
export * from "./client.js";
export * from "./options.js";
export * from "./packet.js";
export * from "./proxy.js";
