import type { DhcpInterface } from "./dhcp/transport.js";

/**
 * What netboot needs to know, and nothing more: the daemon maps its configuration and
 * the host's facts (interface addresses, the bound HTTP port) onto it.
 */
export interface NetbootSettings {
  /** Interfaces the proxy-DHCP serves, each with the address its replies carry. */
  interfaces: DhcpInterface[];
  /** This server's address in URLs handed out outside a DHCP exchange (scripts, kernels). */
  serverAddress: string;
  /** The image library: kernels and initrds of kernel images are served from it. */
  imagesDir: string;
  /** Folder of the iPXE script templates. */
  templatesDir: string;
  /** The site's overrides of those templates (<kind>.ipxe), watched; "" for none. */
  templateOverridesDir: string;
  /** Paths of the iPXE binaries handed to PXE firmware (TFTP) and UEFI HTTP boot. */
  ipxe: { bios: string; efiX64: string; efiArm64?: string };
  tftp: { enabled: boolean; root: string; port: number; maxTransfers: number };
  dhcp: {
    enabled: boolean;
    /** Answer a NIC's own iPXE as PXE firmware, so it loads bootfleet's iPXE first. */
    chainloadNicIpxe: boolean;
    /** Read at each reply, so a reload can change it live. */
    replyDelayMs: () => number;
    /** Whether a MAC is one of this host's interfaces' (host/interfaces.ts ownMacs). */
    isOwnMac?: (mac: string) => boolean;
  };
  /**
   * Subnets ("10.20.0.0/24") whose clients may boot through a DHCP relay: a routed client
   * gets a machine's script only at the machine's fixed address (peer-binding.ts).
   */
  routedSubnets: string[];
  /** How long a boot menu waits, where neither the machine nor its room sets it. */
  menuTimeoutSeconds: number;
  /** The HTTP port the daemon listens on, known once it is bound. */
  httpPort: () => number;
}
