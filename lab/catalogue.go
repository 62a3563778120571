package lab

import (
	"time"

	"github.com/latentworker/latentworker/lab/image"
	"github.com/latentworker/latentworker/lab/moto"
)

// DebianOwner is the AWS account that publishes Debian's official AMIs.
const DebianOwner = "136693071363"

// catalogueEntry is one of the lab's AMIs, registered in every region: named
// and owned like Debian's official AMIs so that "newest debian-12-amd64-*
// owned by 136693071363" finds the newest, as on AWS.
type catalogueEntry struct {
	moto.AMI
	Created time.Time
	// Bootable: the lab has a root filesystem for it (amd64 only; the arm64
	// entry exists so that architecture checks can be exercised).
	Bootable bool
}

func catalogue() []catalogueEntry {
	entry := func(id, name, arch string, created time.Time, bootable bool) catalogueEntry {
		return catalogueEntry{
			AMI: moto.AMI{
				ID:                 id,
				Name:               name,
				Description:        "Debian 12 (" + created.Format("20060102") + ")",
				OwnerID:            DebianOwner,
				Public:             true,
				VirtualizationType: "hvm",
				Architecture:       arch,
				State:              "available",
				ImageType:          "machine",
				ImageLocation:      DebianOwner + "/" + name,
				Hypervisor:         "xen",
				RootDeviceType:     "ebs",
				RootDeviceName:     "/dev/xvda",
				Sriov:              "simple",
			},
			Created:  created,
			Bootable: bootable,
		}
	}
	return []catalogueEntry{
		entry("ami-0b7a1ac0d3e4f5061", "debian-12-amd64-20261001-1180", "x86_64", time.Date(2026, 10, 1, 12, 3, 0, 0, time.UTC), true),
		entry("ami-0c9e2f4d1a6b73852", "debian-12-amd64-20261101-1234", "x86_64", time.Date(2026, 11, 1, 11, 48, 0, 0, time.UTC), true),
		entry("ami-0d4f6b8a2c1e90573", "debian-12-arm64-20261101-1234", "arm64", time.Date(2026, 11, 1, 11, 48, 0, 0, time.UTC), false),
	}
}

// baseUser is the default user of the catalogue's images.
const baseUser = image.DefaultUser
