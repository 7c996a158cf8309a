/* The pod sandbox's process for the real-kubelet tier: holds the pod's namespaces, reaps
 * zombies, and exits 0 on SIGINT/SIGTERM. (registry.k8s.io/pause cannot be pulled here; this
 * does what its pause.c does.) Built with `gcc -static -O2 -o pause pause.c` by node.sh. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig) { (void)sig; _exit(0); }

static void reap(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

int main(void) {
  struct sigaction s = {0};
  s.sa_handler = stop;
  sigaction(SIGINT, &s, NULL);
  sigaction(SIGTERM, &s, NULL);
  s.sa_handler = reap;
  s.sa_flags = SA_NOCLDSTOP;
  sigaction(SIGCHLD, &s, NULL);
  for (;;) pause();
  return 1;
}
