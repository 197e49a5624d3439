/*
 * herdtrace kevent.d: wakeups of a process tree blocked in kevent, accept,
 * poll or select, for FreeBSD's DTrace. Run by `herdtrace record --backend
 * dtrace` as:  dtrace -Z -q -s kevent.d -p PID   or   -c 'CMD ARGS'
 * (-Z: the fbt enrichments below may match no probe on a given kernel).
 *
 * Output, one event per line, fields separated by one space (format 1,
 * docs/dtrace-format.md; herdtrace/collectors/dtrace_parser.py reads it):
 *   E ts tid pid call fd nchanges nevents     wait syscall entry
 *   R ts tid pid call ret errno fam port addr wait syscall return (peer: accept)
 *   W ts tid pid waker_tid waker_pid cpu      sched:::wakeup of a waiting thread
 *   S ts tid pid                              sched:::sleep of a waiting thread
 *   O ts tid pid cpu                          sched:::on-cpu of a waiting thread
 *   T ts tid pid parent_tid comm              a thread of the traced tree, first seen
 *   X ts tid pid                              a traced thread exits
 *   C ts lport rport raddr                    tcp:::accept-established (listener side)
 *   N ts cpu function                         fbt enrichment: solisten_wakeup, knote, wakeup_one
 * ts is `timestamp` (ns). `-` stands for a field with no value.
 *
 * macOS: no progenyof() on older releases (use pid == $target), no tcp
 * provider, syscall names kevent64/kevent_qos, lwps are `thread` ids.
 * illumos: no kevent; event ports (port_get/port_getn) take its place.
 */

#pragma D option quiet
#pragma D option switchrate=20hz
#pragma D option bufsize=16m
#pragma D option dynvarsize=32m

dtrace:::BEGIN
{
	printf("# herdtrace-dtrace 1\n");
}

/* First sight of a thread of the traced tree (progenyof covers forks). */
syscall:::entry
/progenyof($target) && !seen[tid]/
{
	seen[tid] = 1;
	printf("T %d %d %d %d %s\n", timestamp, tid, pid, ppid, execname);
}

syscall::kevent:entry
/progenyof($target)/
{
	self->call = "kevent";
	waiting[tid] = 1;
	printf("E %d %d %d kevent %d %d %d\n", timestamp, tid, pid, (int)arg0, (int)arg2,
	    (int)arg4);
}

syscall::accept:entry, syscall::accept4:entry
/progenyof($target)/
{
	self->call = probefunc;
	self->addr = arg1;
	waiting[tid] = 1;
	printf("E %d %d %d %s %d - -\n", timestamp, tid, pid, probefunc, (int)arg0);
}

syscall::poll:entry, syscall::select:entry
/progenyof($target)/
{
	self->call = probefunc;
	waiting[tid] = 1;
	printf("E %d %d %d %s %d - -\n", timestamp, tid, pid, probefunc,
	    probefunc == "poll" ? (int)arg1 : (int)arg0);
}

syscall::accept:return, syscall::accept4:return
/self->call != 0 && (int)arg0 >= 0 && self->addr != 0/
{
	this->sin = (struct sockaddr_in *)copyin(self->addr, sizeof (struct sockaddr_in));
	printf("R %d %d %d %s %d 0 %d %d %s\n", timestamp, tid, pid, self->call, (int)arg0,
	    this->sin->sin_family, ntohs(this->sin->sin_port),
	    inet_ntoa(&this->sin->sin_addr.s_addr));
	waiting[tid] = 0;
	self->call = 0;
	self->addr = 0;
}

syscall::kevent:return, syscall::accept:return, syscall::accept4:return,
syscall::poll:return, syscall::select:return
/self->call != 0/
{
	printf("R %d %d %d %s %d %d - - -\n", timestamp, tid, pid, self->call, (int)arg0, errno);
	waiting[tid] = 0;
	self->call = 0;
	self->addr = 0;
}

sched:::wakeup
/waiting[args[0]->pr_lwpid]/
{
	printf("W %d %d %d %d %d %d\n", timestamp, args[0]->pr_lwpid, args[1]->pr_pid, tid, pid,
	    cpu);
}

sched:::sleep
/waiting[tid]/
{
	printf("S %d %d %d\n", timestamp, tid, pid);
}

sched:::on-cpu
/waiting[tid]/
{
	printf("O %d %d %d %d\n", timestamp, tid, pid, cpu);
}

proc:::lwp-exit
/seen[tid]/
{
	printf("X %d %d %d\n", timestamp, tid, pid);
	seen[tid] = 0;
	waiting[tid] = 0;
}

tcp:::accept-established
{
	printf("C %d %d %d %s\n", timestamp, args[3]->tcps_lport, args[3]->tcps_rport,
	    args[3]->tcps_raddr);
}

fbt::solisten_wakeup:entry, fbt::knote:entry, fbt::wakeup_one:entry
{
	printf("N %d %d %s\n", timestamp, cpu, probefunc);
}
