/*
 * pause holds a pod sandbox's namespaces: it waits for SIGTERM or SIGINT
 * and, as PID 1 of a shared PID namespace, reaps orphans.
 *
 * It is C, not Go, because it must stay one thread: every thread takes a
 * PID in the pod's PID namespace, and CRIU restores a container into that
 * namespace with the PIDs it had, which a Go runtime's threads
 * (2, 3, ... 12 and more) would hold.
 */
#include <signal.h>
#include <stddef.h>
#include <sys/wait.h>
#include <unistd.h>

static void stop(int sig)
{
	(void)sig;
	_exit(0);
}

static void reap(int sig)
{
	(void)sig;
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

int main(void)
{
	struct sigaction term = {.sa_handler = stop};
	struct sigaction chld = {.sa_handler = reap, .sa_flags = SA_NOCLDSTOP | SA_RESTART};

	if (sigaction(SIGTERM, &term, NULL) < 0 || sigaction(SIGINT, &term, NULL) < 0 ||
	    sigaction(SIGCHLD, &chld, NULL) < 0)
		return 1;
	for (;;)
		pause();
}
