package lab

import (
	"time"

	"github.com/latentworker/latentworker/lab/image"
	"github.com/latentworker/latentworker/lab/moto"
)

// Owners of the catalogue's AMIs: the accounts that publish the official
// images on AWS.
const (
	DebianOwner    = image.DebianOwner
	CanonicalOwner = image.CanonicalOwner
)

// catalogueEntry is one of the lab's AMIs, registered in every region: named
// and owned like the release's official AMIs so that, for example, "newest
// debian-12-amd64-* owned by 136693071363" finds the newest, as on AWS.
type catalogueEntry struct {
	moto.AMI
	Created time.Time
	// Release is the recipe whose base rootfs the AMI boots.
	Release string
	// User is the image's default login user (cloud-init's default_user).
	User string
	// Bootable: the lab has a root filesystem for it (amd64 only; an arm64
	// entry exists so that architecture checks can be exercised).
	Bootable bool
}

// catalogue derives the lab's AMIs from the image recipes.
func catalogue() []catalogueEntry {
	var out []catalogueEntry
	for _, r := range image.Recipes() {
		for _, a := range r.AMIs {
			out = append(out, catalogueEntry{
				AMI: moto.AMI{
					ID:                 a.ID,
					Name:               a.Name,
					Description:        a.Description,
					OwnerID:            r.Owner,
					Public:             true,
					VirtualizationType: "hvm",
					Architecture:       a.Arch,
					State:              "available",
					ImageType:          "machine",
					ImageLocation:      a.Location,
					Hypervisor:         "xen",
					RootDeviceType:     "ebs",
					RootDeviceName:     a.RootDevice,
					Sriov:              "simple",
				},
				Created:  a.Created,
				Release:  r.Name,
				User:     r.User,
				Bootable: a.Bootable(),
			})
		}
	}
	return out
}

// CatalogueImage describes one AMI of the lab's catalogue for clients that
// need to know what AWS does not say, such as the login user.
type CatalogueImage struct {
	ID       string // ami-...
	Name     string // as AWS names it
	Owner    string // the publishing account
	Release  string // the image recipe: debian-12, ubuntu-24.04, ...
	User     string // default login user: admin, ubuntu
	Arch     string // x86_64, arm64
	Created  time.Time
	Bootable bool
}

// Catalogue lists the AMIs every lab registers in every region.
func Catalogue() []CatalogueImage {
	var out []CatalogueImage
	for _, e := range catalogue() {
		out = append(out, CatalogueImage{ID: e.ID, Name: e.Name, Owner: e.OwnerID, Release: e.Release,
			User: e.User, Arch: e.Architecture, Created: e.Created, Bootable: e.Bootable})
	}
	return out
}
