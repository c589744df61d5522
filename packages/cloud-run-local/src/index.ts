export { type EdgeCertificates, makeEdgeCertificates } from "./certificates.js";
export {
  type CloudRunLocal,
  type CloudRunLocalOptions,
  type LocalService,
  type LocalServiceOptions,
  startCloudRunLocal,
} from "./cloud-run-local.js";
export { loadInfra, type Probe, type ServiceDefinition } from "./infra.js";
export type { Instance } from "./instance.js";
export type { Logger } from "./log.js";
