package main

import (
	"archive/tar"
	"bufio"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// freezePhases splits CRIU's frozen time by what a dump.log (-v4) shows it
// spent the time on: the page transfers into the images (a pipe or a
// file), the waits for the parasite's acks (it runs in the dumped task),
// and the action scripts. What is left is CRIU's own work.
type freezePhases struct {
	Frozen  time.Duration // "freezing cgroup" to "Unfreezing tasks"
	Pages   time.Duration // after each "page-xfer:" line
	Acks    time.Duration // "Wait for ack" to "Fetched ack"
	Scripts time.Duration // after each action script's path line
}

var logStamp = regexp.MustCompile(`^\((\d+)\.(\d+)\)\s?(.*)$`)

// parseFreezePhases reads a CRIU dump log. Lines without a time stamp
// (the parasite's own) are skipped.
func parseFreezePhases(r io.Reader) (freezePhases, error) {
	var p freezePhases
	var start, prev, ackFrom time.Duration
	prevKind, frozen := "", false
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := logStamp.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		frac, _ := strconv.ParseFloat("0."+m[2], 64)
		t := time.Duration(sec)*time.Second + time.Duration(frac*float64(time.Second))
		msg := strings.TrimSpace(m[3])
		if frozen {
			switch prevKind {
			case "page":
				p.Pages += t - prev
			case "script":
				p.Scripts += t - prev
			}
		}
		prevKind = ""
		switch {
		case strings.HasPrefix(msg, "freezing cgroup"):
			start, frozen = t, true
		case strings.HasPrefix(msg, "Unfreezing tasks"):
			if frozen {
				p.Frozen = t - start
			}
			frozen = false
		case strings.HasPrefix(msg, "page-xfer:"):
			prevKind = "page"
		case strings.HasPrefix(msg, "[/") && strings.HasSuffix(msg, "]"):
			prevKind = "script"
		case strings.HasPrefix(msg, "Wait for ack"):
			ackFrom = t
		case strings.HasPrefix(msg, "Fetched ack") && frozen:
			p.Acks += t - ackFrom
		}
		prev = t
	}
	return p, sc.Err()
}

// phasesIn reads a dump.log file (zero phases when there is none).
func phasesIn(path string) freezePhases {
	f, err := os.Open(path)
	if err != nil {
		return freezePhases{}
	}
	defer f.Close()
	p, _ := parseFreezePhases(f)
	return p
}

// phasesInArchive reads the dump.log member of a plain checkpoint archive.
func phasesInArchive(path string) freezePhases {
	f, err := os.Open(path)
	if err != nil {
		return freezePhases{}
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err != nil {
			return freezePhases{}
		}
		if strings.TrimPrefix(hdr.Name, "./") == "dump.log" {
			p, _ := parseFreezePhases(io.LimitReader(tr, 64<<20))
			return p
		}
	}
}
