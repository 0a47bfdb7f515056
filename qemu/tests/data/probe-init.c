/* A stand-in for the real init, for the direct-boot test: reports what berth-init
 * assembled, from inside it, then exits (ending the test's PID namespace). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static void show_mount(const char *want) {
    FILE *f = fopen("/proc/self/mountinfo", "r");
    char line[4096];
    if (!f) { printf("MOUNT %s ? (no mountinfo: %s)\n", want, strerror(errno)); return; }
    while (fgets(line, sizeof line, f)) {
        /* fields: id parent major:minor root mountpoint options ... - fstype source superoptions */
        char root[1024], point[1024], opts[256], fstype[64];
        char *dash = strstr(line, " - ");
        if (!dash || sscanf(line, "%*s %*s %*s %1023s %1023s %255s", root, point, opts) != 3) continue;
        if (sscanf(dash + 3, "%63s", fstype) != 1) continue;
        if (strcmp(point, want) == 0) printf("MOUNT %s fstype=%s opts=%s root=%s\n", point, fstype, opts, root);
    }
    fclose(f);
}

static void try_write(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) { printf("WRITE %s %s\n", path, strerror(errno)); return; }
    (void)!write(fd, "x\n", 2);
    close(fd);
    printf("WRITE %s ok\n", path);
}

int main(int argc, char **argv) {
    printf("PROBE-INIT pid=%d argv0=%s argc=%d\n", (int)getpid(), argv[0], argc);
    const char *points[] = {"/", "/etc", "/var", "/run", "/sysroot", "/proc", "/dev", "/sys"};
    for (unsigned i = 0; i < sizeof points / sizeof *points; i++) show_mount(points[i]);
    char buf[4096];
    int fd = open("/etc/hostname", O_RDONLY);
    ssize_t n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (n > 0) { buf[n] = 0; printf("HOSTNAME %s", buf); }
    fd = open("/run/berth/boot.json", O_RDONLY);
    n = fd >= 0 ? read(fd, buf, sizeof buf - 1) : -1;
    if (n > 0) { buf[n] = 0; printf("BOOTJSON %s", buf); } else printf("BOOTJSON missing\n");
    try_write("/etc/written-by-probe");
    try_write("/var/written-by-probe");
    try_write("/written-to-root");
    printf("SYSROOT-RECORD %s\n", access("/sysroot/berth/boot/record.a", F_OK) == 0 ? "visible" : "missing");
    fflush(stdout);
    return 0;
}
