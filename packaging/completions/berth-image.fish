# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_berth_image_global_optspecs
    string join \n h/help V/version
end

function __fish_berth_image_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_berth_image_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_berth_image_using_subcommand
    set -l cmd (__fish_berth_image_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c berth-image -n "__fish_berth_image_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth-image -n "__fish_berth_image_needs_command" -s V -l version -d 'Print version'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "keygen" -d 'Generate an ed25519 signing key pair: DIR/berth.key (secret, mode 0600) and DIR/berth.pub (public, to install on devices). Refuses to overwrite a key'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "commit" -d 'Commit a root filesystem into a repository and print the commit id.'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "checkout" -d 'Check out a commit as a directory tree of hard links into the repository'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "install" -d 'Lay out a sysroot directory for a device\'s first boot: the object store with the commits, their deployments checked out, /var seeded, and the boot record'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "disk" -d 'Build a bootable disk image for a board: a GPT disk whose ext4 sysroot partition holds the store, the deployments and the boot record; the initramfs (berth-init plus the board\'s kernel modules); and the kernel, beside the image'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "bmap" -d 'Write IMAGE.bmap for a sparse image (bmap-tools\' format 2.0): the blocks that hold data, each with its sha256, for `bmaptool copy` and `berth-image flash`'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "initramfs" -d 'Complete a root filesystem\'s kernel set before it is committed: write DIR/usr/lib/modules/<kver>/initramfs.img (berth-init for the board\'s architecture and the board\'s kernel modules with their dependencies, resolved from DIR\'s own modules), so that the committed tree is exactly what boots and an update carries the kernel, its modules and berth-init together'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "flash" -d 'Write a disk image to a USB stick, SD card or file with its bmap, and verify it.'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "delta" -d 'Make a signed update file that takes a device from one commit to another'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "publish" -d 'Publish a commit to a channel of a static repository (a directory to serve over HTTP, copy to a bucket or put behind a CDN)'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "push" -d 'Push a commit to an OCI registry (distribution, Harbor, zot, a cloud\'s registry) as the tag REGISTRY/NAME:TAG, which is the channel'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "boards" -d 'List the boards berth-image knows and where each came from.'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "qemu" -d 'Boot a disk image from `berth-image disk` under QEMU (TCG, one CPU) with the board\'s firmware, its serial console on this terminal.'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "show" -d 'Show a commit: its root tree, parent, version, time, metadata and signers'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "fsck" -d 'Re-hash every object in a repository and check that every commit is complete'
complete -c berth-image -n "__fish_berth_image_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c berth-image -n "__fish_berth_image_using_subcommand keygen" -l out -d 'Directory to write the keys into (created if missing)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand keygen" -s h -l help -d 'Print help'
complete -c berth-image -n "__fish_berth_image_using_subcommand commit" -l repo -d 'The repository' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand commit" -l tree -d 'A directory holding the root filesystem' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand commit" -l tar -d 'A tarball of the root filesystem (plain, gzip or zstd); xattrs are read from PAX SCHILY.xattr records (GNU tar --xattrs, bsdtar)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand commit" -l oci -d 'A container image, named as skopeo names images: oci:DIR[:REF] (an OCI image layout, as `skopeo copy IMAGE oci:DIR:TAG` or umoci write it; REF is the image\'s ref name or manifest digest, needed only when the layout holds several), oci-archive:FILE[:REF] (the same as a tar archive), docker-archive:FILE (what `docker save` writes) or `docker://REGISTRY/NAME:TAG` (--ca and --registry-auth as for `push`). Its layers are applied in order, whiteouts honoured, every blob and every layer checked against its digest; the image\'s platform and labels become commit metadata (oci.architecture, oci.label.KEY, …), and its org.opencontainers.image.version label the default --version' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand commit" -l arch -d 'With --oci: the architecture to take from a multi-platform image, which the image must be for, as OCI names them: amd64, arm64, arm/v7, riscv64 (default: this host\'s)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand commit" -l max-unpacked -d 'With --oci: refuse an image whose layers unpack to more than this many bytes, all together (a decompression bomb)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand commit" -l max-entries -d 'With --oci: refuse an image whose layers hold more than this many entries, all together' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand commit" -l ca -d 'With --oci `docker://…`: trust only the certificate authorities in this PEM file for the registry\'s HTTPS, instead of the system\'s roots. Repeatable' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand commit" -l registry-auth -d 'With --oci `docker://…`: credentials for a registry that asks for them, a Docker-style config.json (as `docker login` writes); a pull token is asked for' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand commit" -l version -d 'The release version: letters, digits and . + ~ _ - (at most 64 bytes). With --oci, the image\'s org.opencontainers.image.version label when not given' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand commit" -l key -d 'Secret key to sign the commit with (from `keygen`); repeat it to sign with several, as a key rotation needs (docs/KEYS.md)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand commit" -l parent -d 'The commit this one follows (full id or a unique prefix)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand commit" -l timestamp -d 'Commit time in seconds since the epoch (default: `SOURCE_DATE_EPOCH`, else now)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand commit" -l meta -d 'Free-form metadata, repeatable: --meta board=qemu-x86_64' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand commit" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth-image -n "__fish_berth_image_using_subcommand checkout" -l repo -d 'The repository' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand checkout" -l verify -d 'Refuse the commit unless it is signed by this public key (repeatable)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand checkout" -l copy -d 'Copy files instead of hard-linking them to the repository'
complete -c berth-image -n "__fish_berth_image_using_subcommand checkout" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth-image -n "__fish_berth_image_using_subcommand install" -l repo -d 'The repository holding the commits' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand install" -l commit -d 'The default deployment\'s commit' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand install" -l previous -d 'A previous deployment, booted when the default cannot be' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand install" -l trial -d 'A deployment to try first, with --tries boots before falling back' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand install" -l tries -d 'How many boots the trial gets (1 to 255)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand install" -l sysroot -d 'The sysroot directory to fill (new or empty)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand install" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth-image -n "__fish_berth_image_using_subcommand disk" -l board -d 'The board (`berth-image boards` lists them)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand disk" -l boards -d 'A directory of more boards (DIR/<name>/board.toml), searched before /etc/berth/boards (`$BERTH_BOARDS_DIR` instead, if set) and the built-in boards; repeat it to search several, the first given first. The first place that has a board\'s name wins (see `berth-image boards --help`)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand disk" -l repo -d 'The repository holding the commits' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand disk" -l commit -d 'The default deployment\'s commit' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand disk" -l previous -d 'A previous deployment, booted when the default cannot be' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand disk" -l trial -d 'A deployment to try first, with --tries boots before falling back' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand disk" -l tries -d 'How many boots the trial gets (1 to 255)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand disk" -s o -l output -d 'The disk image to write; the kernel and initramfs go beside it (NAME.kernel, NAME.initrd)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand disk" -l kernel-dir -d 'The board\'s Debian kernel package, unpacked (dpkg-deb -x linux-image-….deb DIR): its kernel and modules boot a commit that carries no kernel set (then it is required, with --init); for a board whose kernel QEMU loads, its image of the commit\'s own kernel (x86\'s PVH vmlinux) is used when the versions match' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand disk" -l init -d 'berth-init built for the board\'s architecture (`x86_64-unknown-linux-musl` or `aarch64-unknown-linux-musl`). Default: the installed one, beside this berth-image (/usr/bin/berth-image: /usr/lib/berth/init/<target>/berth-init, as the berth-image package installs it); ci/check-init.sh builds target/<target>/device/berth-init' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand disk" -l loader-dir -d 'What the board\'s loader and firmware paths (bootloader.efi-binary, firmware, u-boot) are relative to: `/` takes them from the host\'s Debian packages (systemd-boot-efi, ovmf, u-boot-qemu); give the directory you unpacked them into otherwise (dpkg-deb -x PACKAGE.deb DIR)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand disk" -l json -d 'Print the result as JSON'
complete -c berth-image -n "__fish_berth_image_using_subcommand disk" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth-image -n "__fish_berth_image_using_subcommand bmap" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth-image -n "__fish_berth_image_using_subcommand initramfs" -l board -d 'The board (`berth-image boards` lists them)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand initramfs" -l boards -d 'A directory of more boards (DIR/<name>/board.toml), searched before /etc/berth/boards (`$BERTH_BOARDS_DIR` instead, if set) and the built-in boards; repeat it to search several, the first given first. The first place that has a board\'s name wins (see `berth-image boards --help`)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand initramfs" -l root -d 'The root filesystem to complete (modified in place)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand initramfs" -l kver -d 'The kernel version, when DIR/usr/lib/modules holds several' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand initramfs" -l kernel-dir -d 'Take the kernel and the board\'s modules from this unpacked Debian kernel package (dpkg-deb -x linux-image-….deb KDIR), for a tree without a kernel of its own' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand initramfs" -l init -d 'berth-init built for the board\'s architecture (`x86_64-unknown-linux-musl` or `aarch64-unknown-linux-musl`). Default: the installed one, beside this berth-image (/usr/bin/berth-image: /usr/lib/berth/init/<target>/berth-init, as the berth-image package installs it); ci/check-init.sh builds target/<target>/device/berth-init' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand initramfs" -l json -d 'Print JSON for programs'
complete -c berth-image -n "__fish_berth_image_using_subcommand initramfs" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth-image -n "__fish_berth_image_using_subcommand flash" -l bmap -d 'The bmap (default: IMAGE.bmap)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand flash" -l no-bmap -d 'Write every block of the image, without a bmap (and without checking the image; the read-back still checks the target)'
complete -c berth-image -n "__fish_berth_image_using_subcommand flash" -l force -d 'Write a disk that is not removable (a fixed disk or a loop device). Never writes a device that is in use'
complete -c berth-image -n "__fish_berth_image_using_subcommand flash" -l json -d 'Print the result as JSON'
complete -c berth-image -n "__fish_berth_image_using_subcommand flash" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth-image -n "__fish_berth_image_using_subcommand delta" -l repo -d 'The repository holding the commits' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand delta" -l from -d 'The commit the device runs now' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand delta" -l to -d 'The commit to update to' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand delta" -l key -d 'The secret key to sign the update with; repeat it to sign with several (a device accepts the update if it trusts any of them; docs/KEYS.md)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand delta" -s o -l output -d 'The update file to write' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand delta" -l part-size -d 'Uncompressed bytes per part (a part is the unit of resuming)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand delta" -l level -d 'zstd compression level (1 to 22)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand delta" -l window -d 'Output bytes per patch window: files larger than twice this are diffed window by window, which bounds the build host\'s memory (about 10x the window)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand delta" -l empty -d 'A full update, for a device that may have nothing'
complete -c berth-image -n "__fish_berth_image_using_subcommand delta" -l split -d 'Write a directory instead (superblock, part-00000, …), to serve over HTTP; `berth update DIR` reads it too'
complete -c berth-image -n "__fish_berth_image_using_subcommand delta" -l no-deflate -d 'Send compressed files as plain patches only: an update that a berth without deflate or zip patches (before issue 18) can apply. By default a gzip or zlib file whose base is one too travels through its uncompressed data, and a zip archive (jar, wheel, apk) through its members\', when that is smaller, and the update is then refused by such a berth'
complete -c berth-image -n "__fish_berth_image_using_subcommand delta" -l no-elf -d 'Send ELF files as plain patches only: an update that a berth without ELF patches can apply. By default an ELF file whose base is ELF travels with its code\'s references rewritten into the base\'s addresses when that is smaller, and the update is then refused by such a berth'
complete -c berth-image -n "__fish_berth_image_using_subcommand delta" -l by-kind -d 'Also count the update\'s bytes by kind of file (gzip, ELF, other, trees), each kind\'s operations compressed on their own (compresses everything twice); in the JSON output as `by_kind`'
complete -c berth-image -n "__fish_berth_image_using_subcommand delta" -l json -d 'Print the result as JSON'
complete -c berth-image -n "__fish_berth_image_using_subcommand delta" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth-image -n "__fish_berth_image_using_subcommand publish" -l repo -d 'The repository holding the commits' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand publish" -l commit -d 'The commit the channel points at' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand publish" -l key -d 'The secret key to sign the updates and the pointer with; repeat it to sign with several while devices move from one key to the next (docs/KEYS.md)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand publish" -l from -d 'Also make a delta from this commit (repeatable)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand publish" -l expires-in-days -d 'Days until devices refuse the pointer (1 to 3650: republish well before then)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand publish" -l part-size -d 'Uncompressed bytes per part (the unit of resuming a download)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand publish" -l level -d 'zstd compression level (1 to 22)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand publish" -l to -d 'The static repository directory (created if missing)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand publish" -l channel -d 'The channel (a-z, 0-9, . _ -)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand publish" -l json -d 'Print the result as JSON'
complete -c berth-image -n "__fish_berth_image_using_subcommand publish" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth-image -n "__fish_berth_image_using_subcommand push" -l repo -d 'The repository holding the commits' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand push" -l commit -d 'The commit the channel points at' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand push" -l key -d 'The secret key to sign the updates and the pointer with; repeat it to sign with several while devices move from one key to the next (docs/KEYS.md)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand push" -l from -d 'Also make a delta from this commit (repeatable)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand push" -l expires-in-days -d 'Days until devices refuse the pointer (1 to 3650: republish well before then)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand push" -l part-size -d 'Uncompressed bytes per part (the unit of resuming a download)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand push" -l level -d 'zstd compression level (1 to 22)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand push" -l ca -d 'Trust only the certificate authorities in this PEM file for the registry\'s HTTPS, instead of the system\'s roots (`SSL_CERT_FILE`, `SSL_CERT_DIR`, else /etc/ssl/certs). Repeatable' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand push" -l registry-auth -d 'Credentials for a registry that asks for them: a Docker-style config.json (`{"auths": {"REGISTRY": {"auth": "<base64 of user:password>"}}}`, as `docker login` writes). They go to the registry\'s token service, which issues a push token for NAME (or, for a registry that asks for Basic authentication, with every request)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand push" -l manifest-layers -d 'Layers per manifest (about 270 bytes each). Past it, the tag names an image index of several manifests: registries limit a manifest\'s size (4 MiB is common), and a rootfs has a layer per object' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand push" -l json -d 'Print the result as JSON'
complete -c berth-image -n "__fish_berth_image_using_subcommand push" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth-image -n "__fish_berth_image_using_subcommand boards" -l boards -d 'A directory of more boards (DIR/<name>/board.toml), searched before /etc/berth/boards (`$BERTH_BOARDS_DIR` instead, if set) and the built-in boards; repeat it to search several, the first given first. The first place that has a board\'s name wins (see `berth-image boards --help`)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand boards" -l json -d 'Print a JSON array, one object per board: `name`, `arch`, `description`, `debian_arch`, `kernel_package`, `bootloader`, `qemu` (whether `berth-image qemu` can boot it), `source` ("boards-dir", "system" or "built-in"), `path` (its board.toml; null when built in) and `shadowed` (the places further down with the same name, unused: `source` and `path` each)'
complete -c berth-image -n "__fish_berth_image_using_subcommand boards" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth-image -n "__fish_berth_image_using_subcommand qemu" -l board -d 'The board (default: the one DISK.qemu.json names, the board `disk` built for)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand qemu" -l boards -d 'A directory of more boards (DIR/<name>/board.toml), searched before /etc/berth/boards (`$BERTH_BOARDS_DIR` instead, if set) and the built-in boards; repeat it to search several, the first given first. The first place that has a board\'s name wins (see `berth-image boards --help`)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand qemu" -l loader-dir -d 'What the board\'s firmware paths (qemu.firmware, qemu.firmware-vars, qemu.bios) are relative to: `/` takes them from the host\'s Debian packages (ovmf for OVMF, u-boot-qemu for U-Boot); give the directory you unpacked them into otherwise (dpkg-deb -x PACKAGE.deb DIR)' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand qemu" -l memory -d 'Guest memory in MiB, instead of the board\'s qemu.memory-mib' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand qemu" -l timeout -d 'Kill QEMU after this many seconds (an error: the guest did not power off). Without it QEMU runs until the guest powers off or reboots, or until you quit (Ctrl-C)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand qemu" -l append -d 'The kernel command line, instead of the one DISK.qemu.json holds (boards whose kernel QEMU loads itself; a loader reads it from the disk\'s boot partition)' -r
complete -c berth-image -n "__fish_berth_image_using_subcommand qemu" -l dry-run -d 'Print the QEMU command line (shell-quoted) instead of running it'
complete -c berth-image -n "__fish_berth_image_using_subcommand qemu" -l json -d 'Print {"board", "image", "argv"} as JSON instead of running it (implies --dry-run)'
complete -c berth-image -n "__fish_berth_image_using_subcommand qemu" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c berth-image -n "__fish_berth_image_using_subcommand show" -l repo -d 'The repository' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand show" -l json -d 'Print JSON instead of text'
complete -c berth-image -n "__fish_berth_image_using_subcommand show" -s h -l help -d 'Print help'
complete -c berth-image -n "__fish_berth_image_using_subcommand fsck" -l repo -d 'The repository' -r -F
complete -c berth-image -n "__fish_berth_image_using_subcommand fsck" -s h -l help -d 'Print help'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "keygen" -d 'Generate an ed25519 signing key pair: DIR/berth.key (secret, mode 0600) and DIR/berth.pub (public, to install on devices). Refuses to overwrite a key'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "commit" -d 'Commit a root filesystem into a repository and print the commit id.'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "checkout" -d 'Check out a commit as a directory tree of hard links into the repository'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "install" -d 'Lay out a sysroot directory for a device\'s first boot: the object store with the commits, their deployments checked out, /var seeded, and the boot record'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "disk" -d 'Build a bootable disk image for a board: a GPT disk whose ext4 sysroot partition holds the store, the deployments and the boot record; the initramfs (berth-init plus the board\'s kernel modules); and the kernel, beside the image'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "bmap" -d 'Write IMAGE.bmap for a sparse image (bmap-tools\' format 2.0): the blocks that hold data, each with its sha256, for `bmaptool copy` and `berth-image flash`'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "initramfs" -d 'Complete a root filesystem\'s kernel set before it is committed: write DIR/usr/lib/modules/<kver>/initramfs.img (berth-init for the board\'s architecture and the board\'s kernel modules with their dependencies, resolved from DIR\'s own modules), so that the committed tree is exactly what boots and an update carries the kernel, its modules and berth-init together'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "flash" -d 'Write a disk image to a USB stick, SD card or file with its bmap, and verify it.'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "delta" -d 'Make a signed update file that takes a device from one commit to another'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "publish" -d 'Publish a commit to a channel of a static repository (a directory to serve over HTTP, copy to a bucket or put behind a CDN)'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "push" -d 'Push a commit to an OCI registry (distribution, Harbor, zot, a cloud\'s registry) as the tag REGISTRY/NAME:TAG, which is the channel'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "boards" -d 'List the boards berth-image knows and where each came from.'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "qemu" -d 'Boot a disk image from `berth-image disk` under QEMU (TCG, one CPU) with the board\'s firmware, its serial console on this terminal.'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "show" -d 'Show a commit: its root tree, parent, version, time, metadata and signers'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "fsck" -d 'Re-hash every object in a repository and check that every commit is complete'
complete -c berth-image -n "__fish_berth_image_using_subcommand help; and not __fish_seen_subcommand_from keygen commit checkout install disk bmap initramfs flash delta publish push boards qemu show fsck help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
