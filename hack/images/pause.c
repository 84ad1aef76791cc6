/* The pod sandbox's pause process for the real node: holds the pod's namespaces, reaps zombies,
 * exits on SIGINT/SIGTERM. Built static by hack/image.sh (no image can be pulled on these machines). */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static void on_term(int sig) { (void)sig; _exit(0); }
static void on_child(int sig) {
  (void)sig;
  while (waitpid(-1, NULL, WNOHANG) > 0) {}
}

int main(void) {
  if (getpid() != 1) { /* like upstream pause: harmless, but say what it is for */
    static const char msg[] = "pause: should be the first process in a pod sandbox\n";
    (void)write(2, msg, sizeof msg - 1);
  }
  struct sigaction term = {.sa_handler = on_term}, child = {.sa_handler = on_child, .sa_flags = SA_NOCLDSTOP};
  sigaction(SIGINT, &term, NULL);
  sigaction(SIGTERM, &term, NULL);
  sigaction(SIGCHLD, &child, NULL);
  for (;;) pause();
  return 0;
}
