package kernel

import "strings"

// addCgroupIDs adds pod_uid and container_id to details when a captured
// cgroup path (task_memcg, oom_memcg or cgroup) names them, so that the pod
// can be looked up through the CRI.
func addCgroupIDs(details map[string]string) {
	for _, key := range []string{"task_memcg", "cgroup", "oom_memcg"} {
		p, ok := details[key]
		if !ok {
			continue
		}
		uid, cid := ParseCgroupPath(p)
		if uid != "" && details["pod_uid"] == "" {
			details["pod_uid"] = uid
		}
		if cid != "" && details["container_id"] == "" {
			details["container_id"] = cid
		}
	}
}

// ParseCgroupPath extracts the pod UID and container ID from a kubelet
// cgroup path, for both cgroup drivers:
//
//	/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_with_underscores>.slice/cri-containerd-<id>.scope
//	/kubepods/burstable/pod<uid>/<id>
func ParseCgroupPath(p string) (podUID, containerID string) {
	parts := strings.Split(strings.Trim(p, "/"), "/")
	for i, part := range parts {
		switch {
		case strings.HasSuffix(part, ".slice") && strings.Contains(part, "-pod"):
			u := strings.TrimSuffix(part[strings.LastIndex(part, "-pod")+4:], ".slice")
			podUID = strings.ReplaceAll(u, "_", "-")
		case strings.HasPrefix(part, "pod") && len(part) == 3+36:
			podUID = part[3:]
		case i == len(parts)-1 && podUID != "":
			id := strings.TrimSuffix(part, ".scope")
			for _, prefix := range []string{"cri-containerd-", "crio-", "docker-", "containerd-"} {
				id = strings.TrimPrefix(id, prefix)
			}
			if isHex(id) && len(id) >= 12 {
				containerID = id
			}
		}
	}
	return podUID, containerID
}

func isHex(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}
