import { Role } from "../../../shared/src/gen/chat/v1/chat_pb";

/** roleName is a role for people: "user", "moderator", "admin". */
export function roleName(r: Role): string {
  switch (r) {
    case Role.ADMIN:
      return "admin";
    case Role.MODERATOR:
      return "moderator";
    case Role.USER:
      return "user";
    default:
      return "unknown";
  }
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const fullFmt = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });

/** shortTime is "14:05" in the reader's locale. */
export function shortTime(ms: number): string {
  return timeFmt.format(ms);
}

/** fullTime is the long form for tooltips and <time dateTime>. */
export function fullTime(ms: number): string {
  return fullFmt.format(ms);
}
