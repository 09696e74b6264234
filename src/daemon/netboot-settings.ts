import { fileURLToPath } from "node:url";
import type { Logger } from "pino";
import type { Config } from "../config/config.js";
import type { DhcpInterface } from "../netboot/dhcp/transport.js";
import type { NetbootSettings } from "../netboot/settings.js";

export interface NetbootHostFacts {
  /** The first IPv4 address of an interface (host/interfaces.ts). */
  interfaceIPv4(name: string): string | undefined;
  /** The HTTP port, known once the server is bound. */
  httpPort(): number;
  /** The live configuration's reply delay (a reload changes it). */
  replyDelayMs(): number;
  /** Whether a MAC is one of this host's interfaces' (host/interfaces.ts ownMacs). */
  isOwnMac?(mac: string): boolean;
}

/** The configuration, with the host's facts, as the settings netboot declares. */
export function netbootSettings(c: Config, log: Logger, host: NetbootHostFacts): NetbootSettings {
  const interfaces = netbootInterfaces(c, log, host);
  return {
    interfaces,
    serverAddress: c.netboot.server_address || interfaces[0]?.address || "127.0.0.1",
    imagesDir: c.images_dir,
    templatesDir: fileURLToPath(new URL("../../ipxe/", import.meta.url)),
    templateOverridesDir: c.netboot.templates_dir,
    ipxe: {
      bios: c.tftp.ipxe_bios,
      efiX64: c.tftp.ipxe_efi_x64,
      ...(c.tftp.ipxe_efi_arm64 ? { efiArm64: c.tftp.ipxe_efi_arm64 } : {}),
    },
    tftp: {
      enabled: c.tftp.enabled,
      root: c.tftp.root,
      port: c.tftp.port,
      maxTransfers: c.tftp.max_transfers,
    },
    dhcp: {
      enabled: c.dhcp.enabled,
      chainloadNicIpxe: c.dhcp.chainload_nic_ipxe,
      replyDelayMs: host.replyDelayMs,
      ...(host.isOwnMac ? { isOwnMac: host.isOwnMac } : {}),
    },
    routedSubnets: c.netboot.routed_subnets,
    menuTimeoutSeconds: c.netboot.menu_timeout_seconds,
    httpPort: host.httpPort,
  };
}

/**
 * Each configured interface with the address replies carry: its own IPv4, or
 * server_address for the first one when set (a server with several addresses on it).
 */
function netbootInterfaces(c: Config, log: Logger, host: NetbootHostFacts): DhcpInterface[] {
  const out: DhcpInterface[] = [];
  c.netboot.interfaces.forEach((name, i) => {
    const address = (i === 0 && c.netboot.server_address) || host.interfaceIPv4(name);
    if (!address) {
      log.warn({ interface: name }, "netboot interface has no IPv4 address: not served");
      return;
    }
    out.push({ name, address });
  });
  return out;
}
