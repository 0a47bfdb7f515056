# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_berth_global_optspecs
    string join \n sysroot= boot-json= boot-dir= wait= h/help V/version
end

function __fish_berth_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_berth_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_berth_using_subcommand
    set -l cmd (__fish_berth_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c berth -n "__fish_berth_needs_command" -l sysroot -d 'The sysroot (the partition holding berth/)' -r -F
complete -c berth -n "__fish_berth_needs_command" -l boot-json -d 'berth-init\'s report of this boot (which deployment is booted, and why)' -r -F
complete -c berth -n "__fish_berth_needs_command" -l boot-dir -d 'The boot partition, mounted at DIR, for a board whose loader boots the deployments\' kernels (berth/boot/loader.conf). Without it, berth mounts the partition that file names while it works on it' -r -F
complete -c berth -n "__fish_berth_needs_command" -l wait -d 'How long a command that writes waits for another one to finish (seconds)' -r
complete -c berth -n "__fish_berth_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth -n "__fish_berth_needs_command" -s V -l version -d 'Print version'
complete -c berth -n "__fish_berth_needs_command" -f -a "agent" -d 'Be a device of an Eclipse hawkBit server (or goosebit): poll it, install what it assigns (the delta from the running commit when the action carries one, else the full update; every check of `berth update`), download-only actions and maintenance windows included, answer cancels, and report each action\'s end once the trial is committed or rolled back (docs/FLEET.md)'
complete -c berth -n "__fish_berth_needs_command" -f -a "health" -d 'Decide a trial by its health: booted into the trial, run the checks (every executable in /etc/berth/health.d, then each --health-check); all pass: mark it good; one fails: roll back and reboot. Booted into anything else: nothing to do. berth-health.service runs it before boot-complete.target'
complete -c berth -n "__fish_berth_needs_command" -f -a "status" -d 'Show the deployments (booted, default, trial, previous), their versions, and the last rollback with its reason'
complete -c berth -n "__fish_berth_needs_command" -f -a "mark-good" -d 'Make the booted trial the default (the old default becomes previous). Meant for a health-check unit: run it once the new system has proved itself. Fails unless the booted deployment is the trial'
complete -c berth -n "__fish_berth_needs_command" -f -a "rollback" -d 'Make the next boot use the previous state: drop a pending trial, or else swap the default and the previous deployment. Recorded as a manual rollback'
complete -c berth -n "__fish_berth_needs_command" -f -a "update" -d 'Apply a signed update file (from berth-image delta): verify its signature against the keys the default deployment trusts, refuse a version that is not newer, check free space, apply its parts (resuming after an interruption), check out the new deployment, carry /etc changes forward, and make it the trial for the next boot'
complete -c berth -n "__fish_berth_needs_command" -f -a "check" -d 'Ask a static repository or an OCI registry whether its channel has an update for this device, without downloading it or changing anything (the pointer is verified as for an update)'
complete -c berth -n "__fish_berth_needs_command" -f -a "gc" -d 'Remove deployments nothing points at, then the objects no kept deployment uses. Never removes the booted, default, trial or previous deployment'
complete -c berth -n "__fish_berth_needs_command" -f -a "fsck" -d 'Re-hash every object in the store and check the record\'s deployments; exit 1 if anything is wrong'
complete -c berth -n "__fish_berth_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c berth -n "__fish_berth_using_subcommand agent" -l config -d 'The configuration file (TOML: `server`, `tenant`, `controller_id`, `token_file`, `gateway_token`, `ca`, `max_rate`, `min_rate`, `stall_timeout`, `board`, `tries`, `reboot_command`, and a `[health]` table; docs/FLEET.md). The default file may be missing when the flags say everything; a file named here must exist' -r -F
complete -c berth -n "__fish_berth_using_subcommand agent" -l server -d 'The hawkBit server (`https://HOST:PORT`)' -r
complete -c berth -n "__fish_berth_using_subcommand agent" -l tenant -d 'The tenant (`DEFAULT` on a stock hawkBit)' -r
complete -c berth -n "__fish_berth_using_subcommand agent" -l controller-id -d 'This device\'s controller id' -r
complete -c berth -n "__fish_berth_using_subcommand agent" -l token-file -d 'A file holding the target\'s security token (sent as `TargetToken`)' -r -F
complete -c berth -n "__fish_berth_using_subcommand agent" -l ca -d 'Trust only the certificate authorities in this PEM file for an https:// repository, instead of the system\'s roots: a fleet\'s own CA. Repeat for more files; to trust the system\'s roots as well, add `--ca /etc/ssl/certs/ca-certificates.crt`. Without --ca the system\'s roots are used: `SSL_CERT_FILE` and `SSL_CERT_DIR` when set, else /etc/ssl/certs (the ca-certificates package). A certificate that does not verify stops berth before it changes anything' -r -F
complete -c berth -n "__fish_berth_using_subcommand agent" -l registry-auth -d 'Credentials for an oci:// registry that asks for them: a Docker-style config.json (`{"auths": {"REGISTRY": {"auth": "<base64 of user:password>"}}}`, as `docker login` writes). They go to the registry\'s token service (or, for a registry that asks for Basic authentication, with every request). Without it, berth asks for an anonymous token when the registry wants one' -r -F
complete -c berth -n "__fish_berth_using_subcommand agent" -l max-rate -d 'The most bytes per second a download may take (a metered or shared link)' -r
complete -c berth -n "__fish_berth_using_subcommand agent" -l reboot-command -d 'The command (run with /bin/sh -c) that reboots the device once a trial is written; `none` leaves the reboot to someone else. Default: `reboot`' -r
complete -c berth -n "__fish_berth_using_subcommand agent" -l stall-timeout -d 'Seconds a download may go without a byte before it is cut and resumed (a link gone quiet). Default: 30' -r
complete -c berth -n "__fish_berth_using_subcommand agent" -l retry-delay -d 'Seconds to wait after a failed poll (the server unreachable, a 429); doubled after each failure in a row, at most an hour. Default: 30' -r
complete -c berth -n "__fish_berth_using_subcommand agent" -l sysroot -d 'The sysroot (the partition holding berth/)' -r -F
complete -c berth -n "__fish_berth_using_subcommand agent" -l boot-json -d 'berth-init\'s report of this boot (which deployment is booted, and why)' -r -F
complete -c berth -n "__fish_berth_using_subcommand agent" -l boot-dir -d 'The boot partition, mounted at DIR, for a board whose loader boots the deployments\' kernels (berth/boot/loader.conf). Without it, berth mounts the partition that file names while it works on it' -r -F
complete -c berth -n "__fish_berth_using_subcommand agent" -l wait -d 'How long a command that writes waits for another one to finish (seconds)' -r
complete -c berth -n "__fish_berth_using_subcommand agent" -l gateway-token -d 'The token file holds the tenant\'s gateway token (`GatewayToken`) instead'
complete -c berth -n "__fish_berth_using_subcommand agent" -l once -d 'One poll cycle, and the action it starts, then exit (for scripts, timers and tests): 0 when the cycle ran, an action that failed included (the server was told why); 1 when the cycle itself failed (the server unreachable or refusing, a bad answer, a damaged state file), with one line saying why'
complete -c berth -n "__fish_berth_using_subcommand agent" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth -n "__fish_berth_using_subcommand health" -l config -d 'The configuration file, for its [health] table (as `berth agent`)' -r -F
complete -c berth -n "__fish_berth_using_subcommand health" -l checks -d 'The directory of checks: every executable file in it runs, in name order. One named here (or in the configuration) must exist; the default, /etc/berth/health.d, may be missing, which means no checks' -r -F
complete -c berth -n "__fish_berth_using_subcommand health" -l health-check -d 'A check to run with /bin/sh -c after the directory\'s (repeat for more)' -r
complete -c berth -n "__fish_berth_using_subcommand health" -l timeout -d 'Seconds one check may take before it is killed and counts as failed' -r
complete -c berth -n "__fish_berth_using_subcommand health" -l reboot-command -d 'The command (run with /bin/sh -c) that reboots the device after a rollback; `none` leaves it to someone else. Default: `reboot`' -r
complete -c berth -n "__fish_berth_using_subcommand health" -l sysroot -d 'The sysroot (the partition holding berth/)' -r -F
complete -c berth -n "__fish_berth_using_subcommand health" -l boot-json -d 'berth-init\'s report of this boot (which deployment is booted, and why)' -r -F
complete -c berth -n "__fish_berth_using_subcommand health" -l boot-dir -d 'The boot partition, mounted at DIR, for a board whose loader boots the deployments\' kernels (berth/boot/loader.conf). Without it, berth mounts the partition that file names while it works on it' -r -F
complete -c berth -n "__fish_berth_using_subcommand health" -l wait -d 'How long a command that writes waits for another one to finish (seconds)' -r
complete -c berth -n "__fish_berth_using_subcommand health" -l json -d 'Print the outcome as JSON'
complete -c berth -n "__fish_berth_using_subcommand health" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth -n "__fish_berth_using_subcommand status" -l sysroot -d 'The sysroot (the partition holding berth/)' -r -F
complete -c berth -n "__fish_berth_using_subcommand status" -l boot-json -d 'berth-init\'s report of this boot (which deployment is booted, and why)' -r -F
complete -c berth -n "__fish_berth_using_subcommand status" -l boot-dir -d 'The boot partition, mounted at DIR, for a board whose loader boots the deployments\' kernels (berth/boot/loader.conf). Without it, berth mounts the partition that file names while it works on it' -r -F
complete -c berth -n "__fish_berth_using_subcommand status" -l wait -d 'How long a command that writes waits for another one to finish (seconds)' -r
complete -c berth -n "__fish_berth_using_subcommand status" -l json -d 'Print JSON for programs'
complete -c berth -n "__fish_berth_using_subcommand status" -s h -l help -d 'Print help'
complete -c berth -n "__fish_berth_using_subcommand mark-good" -l sysroot -d 'The sysroot (the partition holding berth/)' -r -F
complete -c berth -n "__fish_berth_using_subcommand mark-good" -l boot-json -d 'berth-init\'s report of this boot (which deployment is booted, and why)' -r -F
complete -c berth -n "__fish_berth_using_subcommand mark-good" -l boot-dir -d 'The boot partition, mounted at DIR, for a board whose loader boots the deployments\' kernels (berth/boot/loader.conf). Without it, berth mounts the partition that file names while it works on it' -r -F
complete -c berth -n "__fish_berth_using_subcommand mark-good" -l wait -d 'How long a command that writes waits for another one to finish (seconds)' -r
complete -c berth -n "__fish_berth_using_subcommand mark-good" -s h -l help -d 'Print help'
complete -c berth -n "__fish_berth_using_subcommand rollback" -l from -d 'Roll back only if DEPLOYMENT is still the trial (or, with no trial, the default); otherwise report that it is done and change nothing' -r
complete -c berth -n "__fish_berth_using_subcommand rollback" -l sysroot -d 'The sysroot (the partition holding berth/)' -r -F
complete -c berth -n "__fish_berth_using_subcommand rollback" -l boot-json -d 'berth-init\'s report of this boot (which deployment is booted, and why)' -r -F
complete -c berth -n "__fish_berth_using_subcommand rollback" -l boot-dir -d 'The boot partition, mounted at DIR, for a board whose loader boots the deployments\' kernels (berth/boot/loader.conf). Without it, berth mounts the partition that file names while it works on it' -r -F
complete -c berth -n "__fish_berth_using_subcommand rollback" -l wait -d 'How long a command that writes waits for another one to finish (seconds)' -r
complete -c berth -n "__fish_berth_using_subcommand rollback" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth -n "__fish_berth_using_subcommand update" -l channel -d 'The channel to follow in a repository URL. The delta from the running commit is fetched when the channel has one; else only the objects the device lacks, or the full update when that costs fewer bytes. Downloads resume where they stopped, across runs and reboots' -r
complete -c berth -n "__fish_berth_using_subcommand update" -l ca -d 'Trust only the certificate authorities in this PEM file for an https:// repository, instead of the system\'s roots: a fleet\'s own CA. Repeat for more files; to trust the system\'s roots as well, add `--ca /etc/ssl/certs/ca-certificates.crt`. Without --ca the system\'s roots are used: `SSL_CERT_FILE` and `SSL_CERT_DIR` when set, else /etc/ssl/certs (the ca-certificates package). A certificate that does not verify stops berth before it changes anything' -r -F
complete -c berth -n "__fish_berth_using_subcommand update" -l registry-auth -d 'Credentials for an oci:// registry that asks for them: a Docker-style config.json (`{"auths": {"REGISTRY": {"auth": "<base64 of user:password>"}}}`, as `docker login` writes). They go to the registry\'s token service (or, for a registry that asks for Basic authentication, with every request). Without it, berth asks for an anonymous token when the registry wants one' -r -F
complete -c berth -n "__fish_berth_using_subcommand update" -l min-rate -d 'Slowest acceptable average rate of one download request, in bytes per second; a slower one is cut and resumed' -r
complete -c berth -n "__fish_berth_using_subcommand update" -l retry-delay -d 'Seconds to wait before retrying a download request that failed or brought nothing new (a server down, a link gone); doubled after each such request in a row, at most 60. Six such requests in a row end the run. A dropped connection that delivered bytes is resumed at once' -r
complete -c berth -n "__fish_berth_using_subcommand update" -l stall-timeout -d 'Seconds a download connection may go without delivering a byte before it is cut and the download resumed (a stalled cellular or satellite link)' -r
complete -c berth -n "__fish_berth_using_subcommand update" -l tries -d 'Boots the new deployment gets before berth-init falls back' -r
complete -c berth -n "__fish_berth_using_subcommand update" -l progress -d 'Progress on stderr: text (the default on a terminal), json (one object per line) or none' -r -f -a "text\t''
json\t''
none\t''"
complete -c berth -n "__fish_berth_using_subcommand update" -l deadline -d 'Give up if the update is not ready to switch to within SECONDS (a stalled USB stick, pipe or network mount). The device keeps its current deployment; a later run resumes with the parts already applied' -r
complete -c berth -n "__fish_berth_using_subcommand update" -l forbid -d 'Refuse an update that makes files of this kind: device (character and block device nodes) or setuid (regular files with the setuid or setgid bit). Repeat for both. Each file the update makes is checked before it is written; the error names the operation and the object' -r -f -a "device\t'Character and block device nodes'
setuid\t'Regular files with the setuid or setgid bit'"
complete -c berth -n "__fish_berth_using_subcommand update" -l sysroot -d 'The sysroot (the partition holding berth/)' -r -F
complete -c berth -n "__fish_berth_using_subcommand update" -l boot-json -d 'berth-init\'s report of this boot (which deployment is booted, and why)' -r -F
complete -c berth -n "__fish_berth_using_subcommand update" -l boot-dir -d 'The boot partition, mounted at DIR, for a board whose loader boots the deployments\' kernels (berth/boot/loader.conf). Without it, berth mounts the partition that file names while it works on it' -r -F
complete -c berth -n "__fish_berth_using_subcommand update" -l wait -d 'How long a command that writes waits for another one to finish (seconds)' -r
complete -c berth -n "__fish_berth_using_subcommand update" -l allow-downgrade -d 'Accept a version that is not newer than the installed one'
complete -c berth -n "__fish_berth_using_subcommand update" -l download-only -d 'Fetch and verify the update and put its objects in the store, then stop: the deployments and the boot record are left as they are. Run the same update again without this flag (in a maintenance window, say) to install it; nothing is fetched or applied twice. `berth gc` in between may cost applying again'
complete -c berth -n "__fish_berth_using_subcommand update" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth -n "__fish_berth_using_subcommand check" -l channel -d 'The channel (for `oci://`, the tag)' -r
complete -c berth -n "__fish_berth_using_subcommand check" -l ca -d 'Trust only the certificate authorities in this PEM file for an https:// repository, instead of the system\'s roots: a fleet\'s own CA. Repeat for more files; to trust the system\'s roots as well, add `--ca /etc/ssl/certs/ca-certificates.crt`. Without --ca the system\'s roots are used: `SSL_CERT_FILE` and `SSL_CERT_DIR` when set, else /etc/ssl/certs (the ca-certificates package). A certificate that does not verify stops berth before it changes anything' -r -F
complete -c berth -n "__fish_berth_using_subcommand check" -l registry-auth -d 'Credentials for an oci:// registry that asks for them: a Docker-style config.json (`{"auths": {"REGISTRY": {"auth": "<base64 of user:password>"}}}`, as `docker login` writes). They go to the registry\'s token service (or, for a registry that asks for Basic authentication, with every request). Without it, berth asks for an anonymous token when the registry wants one' -r -F
complete -c berth -n "__fish_berth_using_subcommand check" -l sysroot -d 'The sysroot (the partition holding berth/)' -r -F
complete -c berth -n "__fish_berth_using_subcommand check" -l boot-json -d 'berth-init\'s report of this boot (which deployment is booted, and why)' -r -F
complete -c berth -n "__fish_berth_using_subcommand check" -l boot-dir -d 'The boot partition, mounted at DIR, for a board whose loader boots the deployments\' kernels (berth/boot/loader.conf). Without it, berth mounts the partition that file names while it works on it' -r -F
complete -c berth -n "__fish_berth_using_subcommand check" -l wait -d 'How long a command that writes waits for another one to finish (seconds)' -r
complete -c berth -n "__fish_berth_using_subcommand check" -l json -d 'Print JSON for programs'
complete -c berth -n "__fish_berth_using_subcommand check" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth -n "__fish_berth_using_subcommand gc" -l sysroot -d 'The sysroot (the partition holding berth/)' -r -F
complete -c berth -n "__fish_berth_using_subcommand gc" -l boot-json -d 'berth-init\'s report of this boot (which deployment is booted, and why)' -r -F
complete -c berth -n "__fish_berth_using_subcommand gc" -l boot-dir -d 'The boot partition, mounted at DIR, for a board whose loader boots the deployments\' kernels (berth/boot/loader.conf). Without it, berth mounts the partition that file names while it works on it' -r -F
complete -c berth -n "__fish_berth_using_subcommand gc" -l wait -d 'How long a command that writes waits for another one to finish (seconds)' -r
complete -c berth -n "__fish_berth_using_subcommand gc" -l json -d 'Print JSON for programs'
complete -c berth -n "__fish_berth_using_subcommand gc" -s h -l help -d 'Print help'
complete -c berth -n "__fish_berth_using_subcommand fsck" -l source -d 'The update file (or split directory) to repair from; verified like an update' -r -F
complete -c berth -n "__fish_berth_using_subcommand fsck" -l sysroot -d 'The sysroot (the partition holding berth/)' -r -F
complete -c berth -n "__fish_berth_using_subcommand fsck" -l boot-json -d 'berth-init\'s report of this boot (which deployment is booted, and why)' -r -F
complete -c berth -n "__fish_berth_using_subcommand fsck" -l boot-dir -d 'The boot partition, mounted at DIR, for a board whose loader boots the deployments\' kernels (berth/boot/loader.conf). Without it, berth mounts the partition that file names while it works on it' -r -F
complete -c berth -n "__fish_berth_using_subcommand fsck" -l wait -d 'How long a command that writes waits for another one to finish (seconds)' -r
complete -c berth -n "__fish_berth_using_subcommand fsck" -l repair -d 'Repair: with neither copy of the boot record valid, write a fresh one (the booted deployment as the default, else the last good one); with --source, rewrite corrupt or missing objects from that signed update'
complete -c berth -n "__fish_berth_using_subcommand fsck" -l json -d 'Print the repair\'s report as JSON'
complete -c berth -n "__fish_berth_using_subcommand fsck" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from agent health status mark-good rollback update check gc fsck help" -f -a "agent" -d 'Be a device of an Eclipse hawkBit server (or goosebit): poll it, install what it assigns (the delta from the running commit when the action carries one, else the full update; every check of `berth update`), download-only actions and maintenance windows included, answer cancels, and report each action\'s end once the trial is committed or rolled back (docs/FLEET.md)'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from agent health status mark-good rollback update check gc fsck help" -f -a "health" -d 'Decide a trial by its health: booted into the trial, run the checks (every executable in /etc/berth/health.d, then each --health-check); all pass: mark it good; one fails: roll back and reboot. Booted into anything else: nothing to do. berth-health.service runs it before boot-complete.target'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from agent health status mark-good rollback update check gc fsck help" -f -a "status" -d 'Show the deployments (booted, default, trial, previous), their versions, and the last rollback with its reason'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from agent health status mark-good rollback update check gc fsck help" -f -a "mark-good" -d 'Make the booted trial the default (the old default becomes previous). Meant for a health-check unit: run it once the new system has proved itself. Fails unless the booted deployment is the trial'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from agent health status mark-good rollback update check gc fsck help" -f -a "rollback" -d 'Make the next boot use the previous state: drop a pending trial, or else swap the default and the previous deployment. Recorded as a manual rollback'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from agent health status mark-good rollback update check gc fsck help" -f -a "update" -d 'Apply a signed update file (from berth-image delta): verify its signature against the keys the default deployment trusts, refuse a version that is not newer, check free space, apply its parts (resuming after an interruption), check out the new deployment, carry /etc changes forward, and make it the trial for the next boot'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from agent health status mark-good rollback update check gc fsck help" -f -a "check" -d 'Ask a static repository or an OCI registry whether its channel has an update for this device, without downloading it or changing anything (the pointer is verified as for an update)'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from agent health status mark-good rollback update check gc fsck help" -f -a "gc" -d 'Remove deployments nothing points at, then the objects no kept deployment uses. Never removes the booted, default, trial or previous deployment'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from agent health status mark-good rollback update check gc fsck help" -f -a "fsck" -d 'Re-hash every object in the store and check the record\'s deployments; exit 1 if anything is wrong'
complete -c berth -n "__fish_berth_using_subcommand help; and not __fish_seen_subcommand_from agent health status mark-good rollback update check gc fsck help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
