package kube

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestTrimObject(t *testing.T) {
	t1 := metav1.NewTime(time.Unix(100, 0))
	t2 := metav1.NewTime(time.Unix(200, 0))
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{
		Annotations:   map[string]string{lastApplied: "{...}", "keep": "me"},
		ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "a", Time: &t2, FieldsV1: metav1.NewFieldsV1(`{"f:spec":{}}`)}, {Manager: "b", Time: &t1}},
	}}
	out, err := TrimObject(svc)
	if err != nil {
		t.Fatal(err)
	}
	s := out.(*corev1.Service)
	if len(s.ManagedFields) != 1 || !s.ManagedFields[0].Time.Equal(&t2) || s.ManagedFields[0].FieldsV1 != nil {
		t.Errorf("managedFields %+v", s.ManagedFields)
	}
	if _, ok := s.Annotations[lastApplied]; ok || s.Annotations["keep"] != "me" {
		t.Errorf("annotations %v", s.Annotations)
	}
}
