export {
  type CleanupResult,
  findOrphans,
  type Orphan,
  type OrphanScanOptions,
  registerCleanupJob,
  STORAGE_CLEANUP_JOB,
} from "./cleanup.js";
export {
  type DirectoryHealth,
  type HealthStatus,
  type HealthThresholds,
  type StorageHealth,
  type StorageInfo,
  type StorageUsage,
  storageHealth,
  storageInfo,
  usageOf,
} from "./usage.js";
