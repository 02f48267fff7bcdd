// systemd units for running vdisk as a service: the controller, and the agent of one host id. Both run in
// the foreground under systemd (Type=simple) and restart on failure; readiness is an ExecStartPost that
// waits until the controller answers (or the agent has registered with it), so units ordered after them
// start only once they serve. Stopping or restarting the agent leaves its devices quiesced (they are made
// with ublk user recovery) and the next agent takes them over: nothing is unmounted.

export interface UnitOptions {
  /** Absolute paths of the node binary and of the vdisk CLI script. */
  node: string;
  main: string;
  dataDir: string;
  hostId: string;
}

export const CONTROLLER_UNIT = 'vdisk-controller.service';
export const AGENT_UNIT = 'vdisk-agent.service';

/** Quotes a word for systemd's command lines (and for the inner sh -c). */
function q(word: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** systemd expands $VAR and %x specifiers in command lines: doubled, they stand for themselves. */
function literal(line: string): string {
  return line.replace(/\$/g, '$$$$').replace(/%/g, '%%');
}

function waitUntil(check: string): string {
  // Up to 60 s in 0.1 s steps; the unit fails to start (and is restarted) if the service never answers.
  // Double quotes for systemd (C escapes inside), so the script itself may use single quotes.
  const script = `i=0; until ${check} >/dev/null 2>&1; do i=$((i+1)); [ $i -ge 600 ] && exit 1; sleep 0.1; done`;
  return `/bin/sh -c "${script.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
}

export function unitFiles(o: UnitOptions): Record<string, string> {
  const vdisk = `${q(o.node)} ${q(o.main)}`;
  const dd = `--data-dir ${q(o.dataDir)}`;
  const controller = `[Unit]
Description=vdisk controller (mapping tables, allocation, map faults)
After=local-fs.target

[Service]
Type=simple
ExecStart=${literal(`${vdisk} controller start --foreground ${dd}`)}
ExecStartPost=${literal(waitUntil(`${vdisk} controller status ${dd}`))}
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
`;
  const agent = `[Unit]
Description=vdisk agent of host ${o.hostId} (serves /dev/ublkbN, /dev/vdisk/NAME)
Wants=${CONTROLLER_UNIT}
After=${CONTROLLER_UNIT}

[Service]
Type=simple
ExecStart=${literal(`${vdisk} agent start --foreground --host-id ${q(o.hostId)} ${dd}`)}
ExecStartPost=${literal(waitUntil(`${vdisk} agent ls --json ${dd} | grep -q ${q(`"hostId":"${o.hostId}"`)}`))}
# SIGTERM: the agent exits and leaves its devices quiesced for the next one (ublk user recovery). With
# devices live it ends itself with SIGKILL (its queue threads sit in the kernel): that is a clean stop.
KillMode=mixed
SuccessExitStatus=SIGKILL
Restart=on-failure
RestartSec=1

[Install]
WantedBy=multi-user.target
`;
  return { [CONTROLLER_UNIT]: controller, [AGENT_UNIT]: agent };
}
