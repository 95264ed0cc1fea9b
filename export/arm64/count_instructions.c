/* A qemu TCG plugin that counts the guest instructions a program's main thread executes, for `bmcell bench
 * --arm64-instructions`: each translated block adds its instruction count to its thread's counter each time it runs.
 * At exit it prints "bmcell-instructions N" (the main thread's count) on stderr. Other threads are left out: a thread
 * pool's workers wait by spinning, for as long as the host's scheduling makes them (the main thread's count still
 * varies by tens of instructions in millions, where it starts and stops that pool). Run the runtimes on one thread.
 * Built against qemu-plugin.h from Debian's qemu source package, the version of the host's qemu-aarch64. */
#include <inttypes.h>
#include <stdio.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MAX_THREADS 1024
static uint64_t instructions[MAX_THREADS];  /* by vCPU index: a thread's own slot, written by that thread only */

static void on_execution(unsigned int vcpu, void *count) {
  if (vcpu < MAX_THREADS) instructions[vcpu] += (uintptr_t)count;
}

static void on_translation(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  qemu_plugin_register_vcpu_tb_exec_cb(tb, on_execution, QEMU_PLUGIN_CB_NO_REGS,
                                       (void *)(uintptr_t)qemu_plugin_tb_n_insns(tb));
}

static void on_exit(qemu_plugin_id_t id, void *unused) {
  fprintf(stderr, "bmcell-instructions %" PRIu64 "\n", instructions[0]);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv) {
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_translation);
  qemu_plugin_register_atexit_cb(id, on_exit, NULL);
  return 0;
}
