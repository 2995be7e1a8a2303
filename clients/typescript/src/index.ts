// @guardwire/client: TypeScript/Node client of the Guardwire guard sidecar (guardwire.v1).
export * from "./client.js";
export * from "./errors.js";
export * as pb from "./gen/guardwire/v1/guard_service_pb.js";
export { Role, type Conversation, type Turn } from "./gen/guardwire/v1/conversation_pb.js";
export { Verdict } from "./gen/guardwire/v1/verdict_pb.js";
export { ErrorReason } from "./gen/guardwire/v1/error_reason_pb.js";
