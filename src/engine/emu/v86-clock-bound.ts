/**
 * Imported by emu-engine.ts right after "v86", and by nothing else: v86 has
 * bound its clock to the guest clock while its module evaluated, so the
 * process gets the host's `performance.now` back (the order: guest-clock.ts).
 */
import { restoreHostClock } from "./guest-clock.js";

restoreHostClock();
